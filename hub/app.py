"""The Starlette application: the node's parts put together, the socket endpoint, the
routes and the node's lifespan."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from hub import openapi, web
from hub.admission import Admission, Denied
from hub.assembly import assemble
from hub.auth import Authenticator
from hub.cli import WS_PROTOCOL
from hub.config import Settings
from hub.cors import Cors
from hub.descriptors import fitted
from hub.disconnect import INTERNAL_ERROR
from hub.errors import HTTP_STATUS, ErrorCode, HubError
from hub.figures.local import LocalFigures
from hub.http import STREAM_PATH, HubHttpProtocol
from hub.logs import configure as configure_logs
from hub.metrics import Metrics
from hub.process import Exporter, tune_collector
from hub.protocol import Transport
from hub.rest import Rest, RestParts, refusal_response
from hub.session import Session
from hub.shutdown import drain_on_sigterm
from hub.sockets import Sockets
from hub.streams import Streams
from hub.tasks import cancel
from hub.transport import WIRE_EXTENSION
from hub.verified import VerifiedTokens
from hub.webhook_routes import WebhookRoutes

log = logging.getLogger("hub")

SOCKET_PATH = "/v1/ws"
MAX_PATH_SHOWN = 200
"""The longest path a refused upgrade's answer repeats."""


class Hub:
    """The node's parts, its lifespan and its socket endpoint."""

    def __init__(self, settings: Settings, clamped: str | None = None) -> None:
        self.settings = settings
        self._clamped = clamped
        """What the open-file limit lowered in the settings, to say once at start."""
        self.metrics = metrics = Metrics()
        self.parts = parts = assemble(settings, metrics)
        self.auth = auth = Authenticator(settings)
        self.sockets = sockets = Sockets(settings)
        self.admission = Admission(sockets, auth, metrics.handshakes_refused)
        node = parts.node
        self.figures = LocalFigures(
            settings.node_id, sockets, node.rooms, parts.tally, node.broker, parts.board
        )
        metrics.watch(self.figures)
        self.sessions = parts.for_sessions(
            settings, metrics, functools.partial(auth.verify, socket=True)
        )
        tokens = VerifiedTokens(auth.verify)
        self.streams = Streams(
            self.admission, sockets, self.sessions, tokens, parts.mailbox, parts.reads
        )
        self.rest = Rest(
            RestParts(
                settings.node_id,
                node,
                node.broker,
                parts.publisher,
                parts.presence,
                parts.tracer,
                parts.board,
                sockets,
                self.figures,
                tokens,
                metrics,
                settings.stats_key,
                parts.broadcasts,
                parts.reads,
            )
        )
        self.webhooks = WebhookRoutes(tokens, parts.reads, parts.webhooks)

    @asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        configure_logs()
        await self.auth.start()
        await self.parts.start(self.streams.taken)
        drain_on_sigterm(self.drain)
        sharing = asyncio.create_task(self.figures.share(), name="figures")
        self.metrics.count_tasks(asyncio.get_running_loop())
        port = self.settings.metrics_port
        exporter = Exporter(port, self.metrics.registry) if port is not None else None
        tune_collector(self.settings.gc_threshold)
        if self._clamped is not None:
            log.warning("%s", self._clamped)
        log.info("node %s started: %s", self.settings.node_id, self.settings.summary)
        try:
            yield
        finally:
            if exporter is not None:
                exporter.stop()
            await cancel([sharing])
            await self.parts.stop()
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

    async def probe(self, request: Request) -> Response:
        """`GET /v1/ws` without an upgrade answers what the handshake would: a browser
        cannot read a refused handshake's status, and needs it to tell a token refused for
        good (401, 403) from a node that is busy (429, 503). Any page may read it."""
        admitted = await self.admission.admit(request, socket=False)
        if isinstance(admitted, Denied):
            answer = refusal_response(admitted.error)
        else:
            answer = JSONResponse({"accepted": True, "node": self.settings.node_id})
        answer.headers["Access-Control-Allow-Origin"] = "*"
        return answer

    async def socket(self, websocket: WebSocket) -> None:
        """One socket's life: admitted, accepted, then its session reads and writes through
        the wire itself, never through Starlette's awaited `receive` and `send`."""
        admitted = await self.admission.admit(websocket, socket=True)
        if isinstance(admitted, Denied):
            client = websocket.client.host if websocket.client else None
            await self._refuse(websocket, admitted, client)
            return
        wire = websocket.scope["extensions"].get(WIRE_EXTENSION)
        if wire is None:
            log.error("no hub wire: run with `hub serve` (uvicorn --ws %s)", WS_PROTOCOL)
            await websocket.accept()  # closed before it, the socket would be a plain 403
            await websocket.close(INTERNAL_ERROR.code)
            return
        await websocket.accept()
        session = Session(self.sessions, admitted, wire)
        self.sockets.add(session, Transport.WEBSOCKET)
        try:
            await session.run()
        except Exception as error:
            self.sockets.failed(session, error)
        finally:
            self.sockets.remove(session)

    async def _refuse(self, websocket: WebSocket, refused: Denied, client: str | None) -> None:
        """Refuse before the upgrade with the refusal's status; a full or draining node
        accepts and closes, so that the client reads why."""
        self.parts.tracer.refused(
            refused.reason,
            int(refused.close.code) if refused.close else HTTP_STATUS[refused.error.code],
            client,
        )
        if refused.close is None:
            await websocket.send_denial_response(refusal_response(refused.error))
            return
        await websocket.accept()
        wire = websocket.scope["extensions"].get(WIRE_EXTENSION)
        if wire is not None:
            wire.close(refused.close)
        else:
            await websocket.close(refused.close.code)


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
        if scope["type"] != "websocket":
            await self._http(scope, receive, send)
        elif scope["path"] == SOCKET_PATH:
            await self._hub.socket(WebSocket(scope, receive, send))
        else:
            await _no_socket_at(WebSocket(scope, receive, send))


async def _no_socket_at(websocket: WebSocket) -> None:
    """Refuse an upgrade on another path with a 404 that names the socket's: Starlette's
    bare 403 left `ws://host:8000` looking like a bad token."""
    path = websocket.scope["path"]
    shown = path if len(path) <= MAX_PATH_SHOWN else path[: MAX_PATH_SHOWN - 3] + "..."
    said = f"no socket at {shown}: the hub's socket is {SOCKET_PATH}"
    await websocket.send_denial_response(refusal_response(HubError(ErrorCode.NOT_FOUND, said)))


def create_app(settings: Settings | None = None) -> ASGIApp:
    fit = fitted(settings or Settings())
    HubHttpProtocol.limit(fit.settings)
    hub = Hub(fit.settings, fit.clamped)
    return _App(hub, _http(hub))


def _http(hub: Hub) -> Starlette:
    rest, webhooks = hub.rest, hub.webhooks
    # Browsers on these origins may call the REST API with an operator's token; the
    # socket needs no CORS (browsers send its Origin, and its token decides).
    middleware = [Middleware(Cors, origins=hub.settings.cors)]
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
            Route("/v1/webhooks", webhooks.collection, methods=["GET", "POST"]),
            Route("/v1/webhooks/{id}", webhooks.remove, methods=["DELETE"]),
            Route("/v1/webhooks/{id}/deliveries", webhooks.deliveries),
            Route("/v1/webhooks/{id}/deliveries/{message}/retry", webhooks.retry, methods=["POST"]),
            Route("/v1/stats", rest.stats),
            Route(SOCKET_PATH, hub.probe),
            Route(STREAM_PATH, hub.streams.open),
            Route(STREAM_PATH + "/{session}", hub.streams.post, methods=["POST"]),
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
