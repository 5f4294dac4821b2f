"""The Starlette application: routes, the socket endpoint, REST, and the node's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from prometheus_client import start_http_server
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from hub.auth import Authenticator, AuthError, Principal, Role
from hub.broker import BrokerUnavailable
from hub.config import Settings
from hub.connection import Connection
from hub.events import check_event
from hub.logs import configure as configure_logs
from hub.metrics import Metrics
from hub.node import Node
from hub.protocol import (
    ID_RE,
    Close,
    ErrorCode,
    HubError,
    check_event_name,
    check_room,
    check_tenant,
)
from hub.ratelimit import KeyedBuckets
from hub.rooms import room_key
from hub.shutdown import drain_on_sigterm
from hub.sockets import Refusal, Sockets
from hub.stats import Figures, Rates, cluster
from hub.transport import WRITER_EXTENSION

log = logging.getLogger("hub")

SOCKET_PATH = "/v1/ws"
MAX_BODY_BYTES = 1 << 20
MAX_BROADCAST_ROOMS = 100
DEFAULT_HISTORY_LIMIT = 100
MAX_HISTORY_LIMIT = 1000
STATS_SECONDS = 2.0
"""How often a node samples its message rates and shares its figures with the cluster."""
CLOSE_FOR = {Refusal.FULL: Close.TRY_AGAIN, Refusal.DRAINING: Close.RESTART}

STATUS_OF = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAVAILABLE: 503,
}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def bearer(connection: HTTPConnection, *, query: bool = False) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return connection.query_params.get("token") if query else None


class Hub:
    """Holds the node and answers the routes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.node = Node(settings, self.metrics)
        self.auth = Authenticator(settings)
        self.sockets = Sockets(settings)
        self.rates = Rates(self.node.tally)
        self.metrics.watch(self.figures)
        rate = settings.broadcast_rate
        self._broadcasts = KeyedBuckets(rate, rate) if rate > 0 else None

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        configure_logs()
        await self.node.start()
        drain_on_sigterm(self.drain)
        sharing = asyncio.create_task(self._share_figures(), name="figures")
        exporter = None
        if self.settings.metrics_port is not None:
            # A thread of prometheus-client's own; the figures it reads are copied whole.
            exporter, _ = start_http_server(
                self.settings.metrics_port, registry=self.metrics.registry
            )
        # Long-lived sockets make every full collection expensive; collect rarely, and
        # keep what start-up allocated out of the collector's sight.
        gc.collect()
        gc.freeze()
        gc.set_threshold(self.settings.gc_threshold, 50, 100)
        log.info("node %s started (broker: %s)", self.node.id, type(self.node.broker).__name__)
        try:
            yield
        finally:
            if exporter is not None:
                exporter.shutdown()
                exporter.server_close()
            sharing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sharing
            await self.node.stop()

    async def drain(self) -> None:
        """Stop taking sockets and close the open ones, spread over `HUB_DRAIN_SECONDS`."""
        await self.sockets.drain(self.settings.drain_seconds)

    def figures(self) -> Figures:
        queued, queued_sockets = self.sockets.backlog()
        tally = self.node.tally
        return Figures(
            node=self.node.id,
            connections=self.sockets.by_role(),
            rooms=len(self.node.rooms),
            messages=tally.totals(),
            per_second=self.rates.per_second,
            dropped=dict(tally.dropped),
            queue_bytes=queued,
            queued_sockets=queued_sockets,
            max_connections=self.sockets.max_connections,
            draining=self.sockets.draining,
            broker_up=self.node.broker.available,
        )

    async def _share_figures(self) -> None:
        while True:
            await asyncio.sleep(STATS_SECONDS)
            self.rates.sample()
            await self.node.presence.report(self.figures().as_json())

    async def socket(self, websocket: WebSocket, receive: Receive) -> None:
        """One socket's life. Once accepted, frames are read from the ASGI `receive` itself:
        one suspended frame less per socket than through `websocket.receive`."""
        client = websocket.client.host if websocket.client else None
        wait = self.sockets.handshake_wait(client)
        if wait > 0:
            self.metrics.handshakes_refused.labels(Refusal.RATE_LIMITED.value).inc()
            retry = str(max(1, math.ceil(wait)))
            await websocket.send_denial_response(
                error_response(
                    429, ErrorCode.RATE_LIMITED, "too many handshakes", {"Retry-After": retry}
                )
            )
            return
        try:
            principal = self.auth.verify(bearer(websocket, query=True))
        except AuthError as error:
            code = "unauthorized" if error.status == 401 else "forbidden"
            await websocket.send_denial_response(error_response(error.status, code, error.message))
            return
        writer = websocket.scope["extensions"].get(WRITER_EXTENSION)
        if writer is None:
            log.error("no fast writer: run with `hub serve` (uvicorn --ws %s)", WRITER_EXTENSION)
            await websocket.close(Close.INTERNAL)
            return
        await websocket.accept()
        refusal = self.sockets.refusal()
        if refusal is not None:
            self.metrics.handshakes_refused.labels(refusal.value).inc()
            writer.close(CLOSE_FOR[refusal], f"node {refusal.value}")
            return
        connection = Connection(self.node, principal, writer)
        self.sockets.add(connection)
        try:
            await connection.run(receive)
        except BrokerUnavailable:
            log.warning("closed %s: broker unavailable while joining its rooms", connection.id)
        except Exception:
            log.exception("closed %s after an internal error", connection.id)
        finally:
            self.sockets.remove(connection)

    def _principal(self, request: Request) -> Principal:
        try:
            return self.auth.verify(bearer(request))
        except AuthError as error:
            raise _Refused(error.status, error.message) from None

    def _throttle(self, principal: Principal) -> None:
        if self._broadcasts is None:
            return
        wait = self._broadcasts.take((principal.tenant, principal.sub))
        if wait > 0:
            rate = self.settings.broadcast_rate
            raise HubError(
                ErrorCode.RATE_LIMITED, f"over {rate:g} broadcasts/s, retry later", retry_after=wait
            )

    async def broadcast(self, request: Request) -> Response:
        principal = self._principal(request)
        if not principal.broadcasts:
            raise HubError(ErrorCode.FORBIDDEN, "only operators and admins broadcast")
        self._throttle(principal)
        body = await _read_json(request)
        tenant = _tenant_for(principal, body.get("tenant"))
        rooms = _rooms_of(body)
        event = check_event_name(body.get("event"))
        data = body.get("data")
        check_event(event, data)
        published = await self.node.publish(tenant, rooms, event, data)
        return JSONResponse({"ids": published.ids, "ts": published.ts}, status_code=202)

    def _readable_room(self, request: Request) -> tuple[str, str]:
        """The room named in the path, and its tenant, when the caller may read it."""
        principal = self._principal(request)
        if principal.role is Role.DEVICE:
            raise HubError(ErrorCode.FORBIDDEN, "devices do not read rooms over REST")
        room = check_room(request.path_params["room"])
        tenant = _tenant_for(principal, request.query_params.get("tenant"))
        if not principal.may_subscribe(room):
            raise HubError(ErrorCode.FORBIDDEN, f"not allowed to read {room}")
        return tenant, room

    async def presence(self, request: Request) -> Response:
        tenant, room = self._readable_room(request)
        members = await self.node.presence.members(room_key(tenant, room))
        members.sort(key=lambda member: (member["sub"], member["conn"]))
        return JSONResponse({"room": room, "members": members})

    async def history(self, request: Request) -> Response:
        tenant, room = self._readable_room(request)
        since = request.query_params.get("since")
        if since is not None and not ID_RE.match(since):
            raise HubError(ErrorCode.BAD_REQUEST, "since must be an event id like 1700000000000-0")
        limit = _limit(request.query_params.get("limit"))
        page = await self.node.history(room_key(tenant, room), since, limit)
        body = b"".join(
            (
                b'{"room":',
                orjson.dumps(room),
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

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "node": self.node.id})

    async def readyz(self, request: Request) -> Response:
        reason = None
        if self.sockets.draining:
            reason = "draining"
        elif not self.node.broker.available:
            reason = "broker unreachable"
        elif self.sockets.full:
            reason = "full"
        if reason is not None:
            return JSONResponse(
                {"ready": False, "reason": reason, "node": self.node.id}, status_code=503
            )
        return JSONResponse({"ready": True, "node": self.node.id})

    async def stats(self, request: Request) -> Response:
        """This node's figures and the cluster's; for operators, admins and the stats key."""
        token = bearer(request)
        key = self.settings.stats_key
        if key is None or token != key:
            principal = self._principal(request)
            if principal.role not in (Role.OPERATOR, Role.ADMIN):
                raise HubError(ErrorCode.FORBIDDEN, "stats are for operators and admins")
        nodes = await self.node.presence.nodes()
        return JSONResponse({"node": self.figures().as_json(), "cluster": cluster(nodes)})

    async def prometheus(self, request: Request) -> Response:
        key = self.settings.stats_key
        if key is not None and bearer(request) != key:
            return error_response(401, "unauthorized", "the stats key is required")
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4")


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def _read_json(request: Request) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HubError(ErrorCode.TOO_LARGE, f"body over {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HubError(ErrorCode.TOO_LARGE, f"body over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    try:
        body = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError:
        raise HubError(ErrorCode.BAD_REQUEST, "body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HubError(ErrorCode.BAD_REQUEST, "body must be a JSON object")
    return body


def _tenant_for(principal: Principal, named: Any) -> str:
    if named is None:
        if principal.tenant is None:
            raise HubError(ErrorCode.BAD_REQUEST, "tenant: admins without a tenant must name one")
        return principal.tenant
    tenant = check_tenant(named)
    if tenant != principal.tenant and principal.role is not Role.ADMIN:
        raise HubError(ErrorCode.FORBIDDEN, "only admins may name another tenant")
    return tenant


def _limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_HISTORY_LIMIT
    if not value.isdigit() or not 1 <= int(value) <= MAX_HISTORY_LIMIT:
        raise HubError(ErrorCode.BAD_REQUEST, f"limit must be 1 to {MAX_HISTORY_LIMIT}")
    return int(value)


def _rooms_of(body: dict[str, Any]) -> list[str]:
    if ("room" in body) == ("rooms" in body):
        raise HubError(ErrorCode.BAD_REQUEST, "give exactly one of room or rooms")
    if "room" in body:
        return [check_room(body["room"])]
    rooms = body["rooms"]
    if not isinstance(rooms, list) or not rooms:
        raise HubError(ErrorCode.BAD_REQUEST, "rooms must be a non-empty list")
    if len(rooms) > MAX_BROADCAST_ROOMS:
        raise HubError(ErrorCode.BAD_REQUEST, f"at most {MAX_BROADCAST_ROOMS} rooms at once")
    checked = [check_room(room) for room in rooms]
    return list(dict.fromkeys(checked))


async def _hub_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HubError)
    status = STATUS_OF[exc.code]
    headers = None
    if exc.retry_after is not None:
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    return error_response(status, exc.code, exc.message, headers)


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _Refused)
    code = "unauthorized" if exc.status == 401 else "forbidden"
    return error_response(exc.status, code, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.BAD_REQUEST}.get(exc.status_code, "error")
    return error_response(exc.status_code, code, exc.detail, dict(exc.headers or {}))


async def _unavailable(request: Request, exc: Exception) -> Response:
    return error_response(503, ErrorCode.UNAVAILABLE, f"broker unavailable: {exc}")


class _App:
    """Starlette for HTTP and the lifespan; sockets on `/v1/ws` go straight to the hub.

    A socket lives for days with its whole ASGI call chain suspended in memory: past
    Starlette's middleware and router that chain is half as deep, which saves a few KiB
    per socket.
    """

    def __init__(self, hub: Hub, http: Starlette) -> None:
        self._hub = hub
        self._http = http

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == SOCKET_PATH:
            await self._hub.socket(WebSocket(scope, receive, send), receive)
        else:
            await self._http(scope, receive, send)


def create_app(settings: Settings | None = None) -> ASGIApp:
    hub = Hub(settings or Settings())
    return _App(hub, _http(hub))


def _http(hub: Hub) -> Starlette:
    return Starlette(
        routes=[
            Route("/v1/broadcast", hub.broadcast, methods=["POST"]),
            Route("/v1/rooms/{room}/history", hub.history),
            Route("/v1/rooms/{room}/presence", hub.presence),
            Route("/v1/stats", hub.stats),
            Route("/healthz", hub.healthz),
            Route("/readyz", hub.readyz),
            Route("/metrics", hub.prometheus),
        ],
        exception_handlers={
            HubError: _hub_error,
            _Refused: _refused,
            BrokerUnavailable: _unavailable,
            HTTPException: _http_error,
        },
        lifespan=hub.lifespan,
    )
