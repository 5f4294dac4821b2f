"""The Starlette application: the node's parts put together, the socket endpoint, the
routes and the node's lifespan."""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from hub import openapi, web
from hub.assembly import assemble
from hub.auth import Authenticator, AuthError, Principal
from hub.broker import BrokerUnavailable
from hub.cli import WS_PROTOCOL
from hub.config import Settings
from hub.descriptors import fitted
from hub.disconnect import DRAINING, FULL, INTERNAL_ERROR
from hub.errors import ErrorCode, error_body
from hub.http import HubHttpProtocol
from hub.logs import configure as configure_logs
from hub.metrics import Metrics
from hub.process import Exporter, tune_collector
from hub.rest import Rest, bearer
from hub.session import Session
from hub.shutdown import drain_on_sigterm
from hub.sockets import Refusal, Sockets
from hub.stats import ROLES, Figures, Rates, tenant_share
from hub.tasks import cancel
from hub.transport import WRITER_EXTENSION

log = logging.getLogger("hub")

SOCKET_PATH = "/v1/ws"
STATS_SECONDS = 2.0
"""How often a node samples its message rates and shares its figures with the cluster."""
CLOSE_FOR = {Refusal.FULL: FULL, Refusal.DRAINING: DRAINING}


@dataclass(frozen=True, slots=True)
class Refused:
    """A handshake refused before the upgrade: why (`hub_handshakes_refused_total`'s
    reasons, or the token's `unauthorized` / `forbidden`), and the answer."""

    reason: str
    answer: Response


class Hub:
    """The node's parts, its lifespan and its socket endpoint."""

    def __init__(self, settings: Settings, clamped: str | None = None) -> None:
        self.settings = settings
        self._clamped = clamped
        """What the open-file limit lowered in the settings, to say once at start."""
        self.metrics = Metrics()
        parts = assemble(settings, self.metrics)
        self.node = parts.node
        self.board = parts.board
        self.auth = Authenticator(settings)
        self._verify = functools.partial(self.auth.verify, socket=True)
        """One callable for every session's token refresh (none made per socket)."""
        self.sockets = Sockets(settings)
        self.rates = Rates(self.node.tally)
        self.metrics.watch(self.figures)
        self.rest = Rest(settings, parts, self.auth, self.sockets, self.metrics, self.figures)

    @asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        configure_logs()
        await self.auth.start()
        await self.node.start()
        drain_on_sigterm(self.drain)
        sharing = asyncio.create_task(self._share_figures(), name="figures")
        self.metrics.count_tasks(asyncio.get_running_loop())
        port = self.settings.metrics_port
        exporter = Exporter(port, self.metrics.registry) if port is not None else None
        tune_collector(self.settings.gc_threshold)
        if self._clamped is not None:
            log.warning("%s", self._clamped)
        log.info("node %s started: %s", self.node.id, self.settings.summary)
        try:
            yield
        finally:
            if exporter is not None:
                exporter.stop()
            await cancel([sharing])
            await self.node.stop()
            await self.auth.stop()

    async def drain(self) -> None:
        """Stop taking sockets and close the open ones, spread over `HUB_DRAIN_SECONDS`, and
        stay unready for `HUB_UNREADY_SECONDS` at least: a node with few sockets would
        otherwise stop listening before a load balancer's next health check saw it leave,
        and the balancer would go on sending it requests that can only time out."""
        loop = asyncio.get_running_loop()
        unready_until = loop.time() + self.settings.unready_seconds
        await self.sockets.drain(self.settings.drain_seconds)
        await asyncio.sleep(max(0.0, unready_until - loop.time()))

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
            tenants=self._tenants(),
        )

    def _tenants(self) -> dict[str, dict[str, Any]]:
        """Each tenant's share of this node: the tenants with a socket or a message here."""
        tally, sockets = self.node.tally, self.sockets.by_tenant()
        rooms = self.node.rooms.by_tenant()
        idle = dict.fromkeys(ROLES, 0)
        return {
            tenant: tenant_share(
                sockets.get(tenant, idle),
                rooms[tenant],
                tally.tenants_in[tenant],
                tally.tenants_out[tenant],
            )
            for tenant in {*sockets, *tally.tenants_in, *tally.tenants_out}
        }

    async def _share_figures(self) -> None:
        while True:
            await asyncio.sleep(STATS_SECONDS)
            self.rates.sample()
            await self.board.post(self.figures().as_json())

    async def _admit(self, connection: HTTPConnection) -> Principal | Refused:
        """The handshake's checks, in order: the client address's rate, the token, the
        quotas. The principal, or why it is refused and the answer that says so."""
        client = connection.client.host if connection.client else None
        wait = self.sockets.handshake_wait(client)
        if wait > 0:
            self.metrics.handshakes_refused.labels(Refusal.RATE_LIMITED.value).inc()
            return Refused(
                Refusal.RATE_LIMITED.value,
                JSONResponse(
                    error_body(ErrorCode.RATE_LIMITED, "too many handshakes"),
                    status_code=429,
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                ),
            )
        try:
            principal = await self.auth.verify(bearer(connection, query=True), socket=True)
        except AuthError as error:
            code = "unauthorized" if error.status == 401 else "forbidden"
            answer = JSONResponse(error_body(code, error.message), status_code=error.status)
            return Refused(code, answer)
        quota = self.sockets.over_quota(principal)
        if quota is not None:
            self.metrics.handshakes_refused.labels(Refusal.QUOTA.value).inc()
            answer = JSONResponse(error_body(ErrorCode.RATE_LIMITED, quota), status_code=429)
            return Refused(Refusal.QUOTA.value, answer)
        return principal

    async def probe(self, request: Request) -> Response:
        """`GET /v1/ws` without an upgrade answers what the handshake would: a browser
        cannot read a refused handshake's status, and needs it to tell a token refused for
        good (401, 403) from a node that is busy (429, 503). Any page may read it."""
        admitted = await self._admit(request)
        if isinstance(admitted, Refused):
            answer = admitted.answer
        elif (refusal := self.sockets.refusal()) is not None:
            answer = JSONResponse(
                error_body(ErrorCode.UNAVAILABLE, f"the node is {refusal.value}"), status_code=503
            )
        else:
            answer = JSONResponse({"accepted": True, "node": self.node.id})
        answer.headers["Access-Control-Allow-Origin"] = "*"
        return answer

    async def socket(self, websocket: WebSocket, receive: Receive) -> None:
        """One socket's life. Once accepted, frames are read from the ASGI `receive` itself:
        one suspended frame less per socket than through `websocket.receive`."""
        admitted = await self._admit(websocket)
        tracer = self.node.tracer
        client = websocket.client.host if websocket.client else None
        if isinstance(admitted, Refused):
            tracer.refused(admitted.reason, admitted.answer.status_code, client)
            await websocket.send_denial_response(admitted.answer)
            return
        principal = admitted
        writer = websocket.scope["extensions"].get(WRITER_EXTENSION)
        if writer is None:
            log.error("no fast writer: run with `hub serve` (uvicorn --ws %s)", WS_PROTOCOL)
            await websocket.accept()  # closed before it, the socket would be a plain 403
            await websocket.close(INTERNAL_ERROR.code)
            return
        await websocket.accept()
        refusal = self.sockets.refusal()
        if refusal is not None:
            self.metrics.handshakes_refused.labels(refusal.value).inc()
            tracer.refused(refusal.value, int(CLOSE_FOR[refusal].code), client)
            writer.close(CLOSE_FOR[refusal])
            return
        session = Session(self.node, principal, writer, self._verify)
        self.sockets.add(session)
        try:
            await session.run(receive)
        except BrokerUnavailable:
            log.warning(
                "closed %s: broker unavailable while joining its rooms",
                session.id,
                extra=session.log_fields,
            )
        except Exception:
            log.exception("closed %s after an internal error", session.id, extra=session.log_fields)
        finally:
            self.sockets.remove(session)


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
    fit = fitted(settings or Settings())
    HubHttpProtocol.limit(fit.settings)
    hub = Hub(fit.settings, fit.clamped)
    return _App(hub, _http(hub))


def _http(hub: Hub) -> Starlette:
    rest = hub.rest
    middleware = []
    if hub.settings.cors:
        # Browsers on these origins may call the REST API with an operator's token; the
        # socket needs no CORS (browsers send its Origin, and its token decides).
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=hub.settings.cors,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "traceparent"],
                expose_headers=["Idempotent-Replayed", "Retry-After"],
                max_age=600,
            )
        )
    return Starlette(
        middleware=middleware,
        routes=[
            *web.routes(),
            Route("/v1/broadcast", rest.broadcast, methods=["POST"]),
            Route("/v1/rooms/{room}/history", rest.history),
            Route("/v1/rooms/{room}/presence", rest.presence),
            Route("/v1/rooms/{room}/state", rest.state),
            Route("/v1/rooms/{room}/events/{id}/receipts", rest.receipts),
            Route("/v1/devices", rest.devices),
            Route("/v1/stats", rest.stats),
            Route(SOCKET_PATH, hub.probe),
            Route("/healthz", rest.healthz),
            Route("/readyz", rest.readyz),
            Route("/metrics", rest.prometheus),
            Route("/v1/openapi.json", openapi_document),
        ],
        exception_handlers=dict(rest.exception_handlers()),
        lifespan=hub.lifespan,
    )


async def openapi_document(_request: Request) -> Response:
    return Response(openapi.encoded(), media_type="application/json")
