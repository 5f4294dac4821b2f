"""The REST API: request parsing (pure) and the handlers, which ask the principal for
rights and the node for the rest."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hub.auth import AuthError, Principal, Role, bearer
from hub.bodies import (
    CURSOR_MAX_LEN,
    DEFAULT_HISTORY_LIMIT,
    IDEMPOTENCY_KEY_RE,
    MAX_BODY_BYTES,
    MAX_BROADCAST_ROOMS,
    MAX_HISTORY_LIMIT,
    MAX_PRESENCE_LIMIT,
    Health,
    Published,
    Readiness,
    Receipts,
    Unready,
)
from hub.broker import Broker, BrokerUnavailable
from hub.errors import CODE_OF_STATUS, ErrorCode, HubError, error_body, rest_refusal
from hub.events import check_event
from hub.figures import Board
from hub.fleet import MAX_FLEET_LIMIT, parse_query
from hub.history import parse_id
from hub.limits import Limit
from hub.metrics import Metrics
from hub.node import Node
from hub.presence import Place, Presence
from hub.protocol import (
    Timing,
    check_depth,
    check_event_name,
    check_room,
    check_since,
    check_tenant,
    check_timing,
    load_object,
    state_body,
)
from hub.publishing import IdempotencyKey, Publisher
from hub.rooms import RoomKey
from hub.sockets import Sockets
from hub.stats import Figures, cluster, tenant_cluster, tenant_node
from hub.tracing import Tracer
from hub.verified import VerifiedTokens

LIMIT_RE = re.compile(r"[0-9]{1,4}")
IDEMPOTENCY_KEY = "idempotency-key"
REPLAYED = {"Idempotent-Replayed": "true"}
PUBLIC = {"Access-Control-Allow-Origin": "*"}
"""Health answers any page may read: a browser client tells a node that is down from one
that refuses its token by them."""


@dataclass(frozen=True, slots=True)
class Broadcast:
    """A broadcast request as parsed from its body."""

    tenant: str | None
    """The tenant the body names, if any (admins only)."""
    rooms: list[str]
    event: str
    data: Any
    timing: Timing


def parse_broadcast(body: dict[str, Any]) -> Broadcast:
    named = body.get("tenant")
    tenant = check_tenant(named) if named is not None else None
    if ("room" in body) == ("rooms" in body):
        raise HubError(ErrorCode.BAD_REQUEST, "give exactly one of room or rooms")
    if "room" in body:
        rooms = [check_room(body["room"])]
    else:
        listed = body["rooms"]
        if not isinstance(listed, list) or not listed:
            raise HubError(ErrorCode.BAD_REQUEST, "rooms must be a non-empty list")
        if len(listed) > MAX_BROADCAST_ROOMS:
            raise HubError(ErrorCode.BAD_REQUEST, f"at most {MAX_BROADCAST_ROOMS} rooms at once")
        rooms = list(dict.fromkeys(check_room(room) for room in listed))
    event = check_event_name(body.get("event"))
    data = check_depth(body.get("data"))
    check_event(event, data)
    return Broadcast(tenant, rooms, event, data, check_timing(body))


def parse_idempotency_key(request: Request) -> str | None:
    """The request's `Idempotency-Key`, if it has one; one that does not match whole, or
    several, are refused before anything else is looked at."""
    given = request.headers.getlist(IDEMPOTENCY_KEY)
    if not given:
        return None
    if len(given) > 1 or IDEMPOTENCY_KEY_RE.fullmatch(given[0]) is None:
        raise HubError(
            ErrorCode.BAD_REQUEST,
            "Idempotency-Key must be one header of 1 to 128 characters of A-Za-z0-9_.:-",
        )
    return given[0]


def _digest(fields: dict[str, Any]) -> str:
    """The sha256 (hex) of a body's JSON value: the same whatever its key order or spacing."""
    return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()


def parse_limit(
    value: str | None, default: int = DEFAULT_HISTORY_LIMIT, most: int = MAX_HISTORY_LIMIT
) -> int:
    """ASCII digits only: `str.isdigit` also takes superscripts and other scripts' digits."""
    if value is None:
        return default
    if LIMIT_RE.fullmatch(value) is None or not 1 <= int(value) <= most:
        raise HubError(ErrorCode.BAD_REQUEST, f"limit must be 1 to {most}")
    return int(value)


def _cursor(after: str) -> Place:
    """`after` is a page's `next`: the last member's sub and conn, a space between (a conn
    never has one, and a sub may)."""
    sub, space, conn = after.rpartition(" ")
    if not space or len(after) > CURSOR_MAX_LEN:
        raise HubError(ErrorCode.BAD_REQUEST, "after must be the `next` of a presence page")
    return sub, conn


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, refused as soon as it is known to be over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise HubError(ErrorCode.TOO_LARGE, f"body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HubError(ErrorCode.TOO_LARGE, f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class RestParts:
    """What the REST handlers use of their node."""

    node_id: str
    node: Node
    broker: Broker
    publisher: Publisher
    presence: Presence
    tracer: Tracer
    board: Board
    sockets: Sockets
    figures: Callable[[], Figures]
    tokens: VerifiedTokens
    metrics: Metrics
    stats_key: str | None
    broadcasts: Limit | None
    reads: Limit | None


class Rest:
    """The HTTP routes' handlers."""

    def __init__(self, parts: RestParts) -> None:
        self._parts = parts

    async def _principal(self, request: Request) -> Principal:
        return await self._parts.tokens.principal(bearer(request))

    async def _reader(self, request: Request) -> Principal:
        """The principal of a read, within its token's read rate."""
        principal = await self._principal(request)
        await within_rate(self._parts.reads, principal)
        return principal

    async def broadcast(self, request: Request) -> Response:
        """Every check comes before the publish, which alone claims an idempotency key: a
        refused request leaves the key free. A replay is rebuilt from the same body's
        rooms and the first publish's ids and ts, so its bytes are the first answer's."""
        key = parse_idempotency_key(request)
        principal = await self._principal(request)
        principal.check_broadcast()
        await within_rate(self._parts.broadcasts, principal)
        fields = load_object(await read_body(request), "body")
        broadcast = parse_broadcast(fields)
        tenant = principal.tenant_for(broadcast.tenant)
        idempotency = None
        if key is not None:
            idempotency = IdempotencyKey(key, _digest(fields))
        trace = self._parts.tracer.publish(
            "broadcast", tenant, broadcast.rooms, broadcast.event, parent=request.headers
        )
        published = await self._parts.publisher.publish_soon(
            tenant,
            broadcast.rooms,
            broadcast.event,
            broadcast.data,
            broadcast.timing,
            idempotency,
            trace,
        )
        answer: Published = {"ids": published.ids, "ts": published.ts, "reach": published.reach}
        return JSONResponse(
            answer,
            status_code=202,
            headers=REPLAYED if published.replayed else None,
        )

    async def _readable_room(self, request: Request) -> RoomKey:
        """The room named in the path, when the caller may read it."""
        principal = await self._reader(request)
        room = check_room(request.path_params["room"])
        named = request.query_params.get("tenant")
        key = RoomKey(
            principal.tenant_for(check_tenant(named) if named is not None else None), room
        )
        principal.check_read(room)
        return key

    async def presence(self, request: Request) -> Response:
        """A page of the room's members in (`sub`, `conn`) order; `next` is where the next
        page starts (the `after` to send), null on the last."""
        key = await self._readable_room(request)
        limit = parse_limit(
            request.query_params.get("limit"), MAX_PRESENCE_LIMIT, MAX_PRESENCE_LIMIT
        )
        after = request.query_params.get("after")
        place = None if after is None else _cursor(after)
        members = await self._parts.presence.members(key, place, limit + 1)
        page = members[:limit]
        cursor = f"{page[-1]['sub']} {page[-1]['conn']}" if len(members) > limit else None
        body = orjson.dumps({"room": key.room, "members": page, "next": cursor})
        return Response(body, media_type="application/json")

    async def state(self, request: Request) -> Response:
        """The room's current state: the newest event of each state name."""
        key = await self._readable_room(request)
        (events,) = await self._parts.node.states([key])
        return Response(state_body(key.room, events), media_type="application/json")

    async def receipts(self, request: Request) -> Response:
        """The latest receipt of each principal for one event of a room, oldest first."""
        key = await self._readable_room(request)
        event_id = request.path_params["id"]
        if parse_id(event_id) is None:
            raise HubError(ErrorCode.BAD_REQUEST, "id must be an event id like 1700000000000-0")
        records = [orjson.loads(raw) for raw in await self._parts.broker.receipts(key, event_id)]
        records.sort(key=lambda record: (record["time"], record["sub"], record["role"]))
        answer: Receipts = {"room": key.room, "id": event_id, "receipts": records}
        return JSONResponse(answer)

    async def devices(self, request: Request) -> Response:
        """A page of the tenant's fleet, in `sub` order (see `hub.fleet`)."""
        principal = await self._reader(request)
        principal.check_fleet()
        named = request.query_params.get("tenant")
        tenant = principal.tenant_for(check_tenant(named) if named is not None else None)
        params = request.query_params
        limit = parse_limit(params.get("limit"), MAX_FLEET_LIMIT, MAX_FLEET_LIMIT)
        query = parse_query(params, limit)
        page = await self._parts.presence.devices(tenant, query)
        return JSONResponse({"devices": page.devices, "next": page.next})

    async def history(self, request: Request) -> Response:
        key = await self._readable_room(request)
        since = check_since(request.query_params.get("since"))
        limit = parse_limit(request.query_params.get("limit"))
        page = await self._parts.node.history(key, since, limit)
        body = b"".join(
            (
                b'{"room":',
                orjson.dumps(key.room),
                b',"epoch":',
                orjson.dumps(page.epoch),
                b',"events":[',
                b",".join(page.events),
                b'],"last":',
                orjson.dumps(page.last),
                b"}",
            )
        )
        return Response(body, media_type="application/json")

    async def healthz(self, _request: Request) -> Response:
        answer: Health = {"status": "ok", "node": self._parts.node_id}
        return JSONResponse(answer, headers=PUBLIC)

    async def readyz(self, _request: Request) -> Response:
        reason: Unready | None = None
        if self._parts.sockets.draining:
            reason = "draining"
        elif not self._parts.broker.available or not self._parts.presence.ready:
            reason = "broker unreachable"
        elif self._parts.sockets.full:
            reason = "full"
        if reason is not None:
            unready: Readiness = {"ready": False, "reason": reason, "node": self._parts.node_id}
            return JSONResponse(unready, status_code=503, headers=PUBLIC)
        ready: Readiness = {"ready": True, "node": self._parts.node_id}
        return JSONResponse(ready, headers=PUBLIC)

    def _holds_stats_key(self, request: Request) -> bool:
        key, token = self._parts.stats_key, bearer(request)
        return key is not None and token is not None and hmac.compare_digest(token, key)

    async def stats(self, request: Request) -> Response:
        """This node's figures and the cluster's, whole for admins and the stats key; an
        operator sees its own tenant's share only. Without Redis the node's own figures
        are still answered, `cluster` is null and `cluster_error` says why."""
        tenant = None
        if not self._holds_stats_key(request):
            principal = await self._reader(request)
            principal.check_stats()
            tenant = None if principal.role is Role.ADMIN else principal.tenant
        node = self._parts.figures().as_json()
        try:
            nodes = await self._parts.board.read()
        except BrokerUnavailable as error:
            mine = node if tenant is None else tenant_node(node, tenant)
            return JSONResponse({"node": mine, "cluster": None, "cluster_error": error.message})
        if tenant is None:
            return JSONResponse({"node": node, "cluster": cluster(nodes)})
        return JSONResponse(
            {"node": tenant_node(node, tenant), "cluster": tenant_cluster(nodes, tenant)}
        )

    async def refused(self, _request: Request, exc: Exception) -> Response:
        """Every `HubError` (a broker that is down included) as its REST answer, counted."""
        assert isinstance(exc, HubError)
        self._parts.metrics.refusals.labels(exc.code.value).inc()
        return refusal_response(exc)

    def exception_handlers(self) -> dict[type[Exception], ExceptionHandler]:
        return {HubError: self.refused, AuthError: unauthorized, HTTPException: http_error}

    async def prometheus(self, request: Request) -> Response:
        if self._parts.stats_key is not None and not self._holds_stats_key(request):
            return JSONResponse(
                error_body("unauthorized", "the stats key is required"), status_code=401
            )
        body, content_type = self._parts.metrics.render(request.headers.get("accept"))
        return Response(body, headers={"Content-Type": content_type})


async def within_rate(chosen: Limit | None, principal: Principal) -> None:
    """A token from the principal's bucket, or `rate_limited` with when to retry."""
    if chosen is None:
        return
    wait = await chosen.take(f"{principal.tenant}:{principal.sub}")
    if wait > 0:
        raise HubError(
            ErrorCode.RATE_LIMITED,
            f"over {chosen.rate:g} {chosen.name}/s, retry later",
            retry_after=wait,
        )


async def unauthorized(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AuthError)
    return refusal_response(exc.refusal())


def refusal_response(error: HubError) -> Response:
    """The answer to a request refused with `error` (`hub.errors.rest_refusal`)."""
    status, body, headers = rest_refusal(error)
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type="application/json"
    )


async def http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = CODE_OF_STATUS.get(exc.status_code, "error")
    return JSONResponse(
        error_body(code, exc.detail), status_code=exc.status_code, headers=dict(exc.headers or {})
    )


ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]
