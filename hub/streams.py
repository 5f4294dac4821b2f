"""This node's event streams: `GET /v1/stream` opens one, `POST /v1/stream/{session}` sends
its frames, on whichever node the load balancer chose.

A stream is admitted exactly as a socket is (`hub.admission`) and runs the same `Session`
on a `hub.stream.StreamWire`. A POST for a session this node does not hold is handed to
the node that holds it (`hub.mailbox`); that node alone checks the session and takes the
frames, so they reach the session in the order their POSTs were answered.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from hub.admission import Admission, Denied
from hub.auth import AuthError, bearer
from hub.errors import HTTP_STATUS, ErrorCode, HubError
from hub.http import TRANSPORT_EXTENSION
from hub.limits import Limit
from hub.mailbox import Mailbox
from hub.protocol import MAX_POST_FRAMES, Transport
from hub.rest import read_body, refusal_response, within_rate
from hub.session import Session
from hub.session_parts import SessionParts
from hub.sockets import Sockets
from hub.stream import StreamWire
from hub.tasks import cancel
from hub.verified import VerifiedTokens

log = logging.getLogger("hub")

INBOX_FRAMES = 2 * MAX_POST_FRAMES
"""Frames a session may have waiting to be read: past them a POST is refused with 429, and
the client sends again once answers come."""

TAKEN: dict[int, HubError | None] = {
    202: None,
    400: HubError(ErrorCode.BAD_REQUEST, "the body must be a frame or an array of frames"),
    403: HubError(ErrorCode.FORBIDDEN, "the session belongs to another subject or tenant"),
    404: HubError(ErrorCode.NOT_FOUND, "no such stream session: it ended, or never was"),
    413: HubError(ErrorCode.TOO_LARGE, f"at most {MAX_POST_FRAMES} frames in one POST"),
    429: HubError(
        ErrorCode.RATE_LIMITED,
        "the session has not read the frames sent before yet, send again",
        retry_after=1.0,
    ),
    503: HubError(ErrorCode.UNAVAILABLE, "the node holding the session is unreachable"),
}
"""Each answer to a POST's frames, by status: the one place they are worded, for a POST
answered here or by another node."""


def frames_of(body: bytes) -> list[str] | int:
    """A POST body's frames as the texts a socket would have sent, or the refusal's status.

    Each frame is checked by the session as a socket's is; here only the shape of the
    batch is.
    """
    try:
        sent = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 400
    if isinstance(sent, dict):
        return [body.decode()]
    if not isinstance(sent, list):
        return 400
    if len(sent) > MAX_POST_FRAMES:
        return 413
    return [orjson.dumps(frame).decode() for frame in sent]


class Streams:
    """The open streams of this node, and the two routes that serve them."""

    def __init__(
        self,
        admission: Admission,
        sockets: Sockets,
        sessions: SessionParts,
        tokens: VerifiedTokens,
        mailbox: Mailbox,
        forwards: Limit | None,
    ) -> None:
        self._admission = admission
        self._sockets = sockets
        self._sessions = sessions
        self._tokens = tokens
        self._mailbox = mailbox
        self._forwards = forwards
        """A token's POSTs to sessions of other nodes, within the REST read rate: each
        costs the cluster a lookup and a message, and ids nobody holds cost it as much."""
        self._open: dict[str, StreamWire] = {}

    async def open(self, request: Request) -> Response:
        """`GET /v1/stream`: admitted as a socket's handshake is, refused with its status."""
        admitted = await self._admission.admit(request, socket=True)
        if isinstance(admitted, Denied):
            client = request.client.host if request.client else None
            status = HTTP_STATUS[admitted.error.code]
            self._sessions.tracer.refused(admitted.reason, status, client)
            return refusal_response(admitted.error)
        settings = self._sessions.settings
        transport = request.scope.get("extensions", {}).get(TRANSPORT_EXTENSION)
        if transport is None:
            log.error("no transport for an event stream: run with `hub serve`")
            raise HubError(ErrorCode.UNAVAILABLE, "event streams need `hub serve`")
        wire = StreamWire(
            admitted.sub, admitted.tenant, settings.heartbeat_interval, INBOX_FRAMES, transport
        )
        await self._mailbox.register(wire.id)  # refused with 503 when the cluster cannot know
        return _Stream(self, wire, Session(self._sessions, admitted, wire))

    async def run(self, wire: StreamWire, session: Session, send: Send, receive: Receive) -> None:
        """The stream's response and its session, together, until both are over."""
        self._open[wire.id] = wire
        self._sockets.add(session, Transport.STREAM)
        serving = asyncio.create_task(wire.serve(send, receive), name="stream")
        try:
            await session.run()
        except Exception as error:
            self._sockets.failed(session, error)
        finally:
            self._sockets.remove(session)
            del self._open[wire.id]
            try:
                await self._mailbox.unregister(wire.id)
                await serving
            finally:
                await cancel([serving])

    async def post(self, request: Request) -> Response:
        """`POST /v1/stream/{session}`: the frames go to the session, wherever it is. Any
        page may read the answer, as any may read the stream: the token decides. A page
        that sends `?token=` and a `text/plain` body needs no preflight."""
        try:
            refused = await self._post(request)
        except AuthError as failed:
            refused = failed.refusal()
        except HubError as error:
            refused = error
        answer = Response(status_code=202) if refused is None else refusal_response(refused)
        answer.headers["Access-Control-Allow-Origin"] = "*"
        return answer

    async def _post(self, request: Request) -> HubError | None:
        principal = await self._tokens.principal(bearer(request, query=True))
        body = await read_body(request, self._sessions.settings.max_frame_bytes)
        session = request.path_params["session"]
        if session in self._open:
            status = self.take(session, principal.sub, principal.tenant, body)
        else:
            await within_rate(self._forwards, principal)
            status = await self._mailbox.forward(session, principal.sub, principal.tenant, body)
        return TAKEN.get(status, TAKEN[503])

    def take(self, session: str, sub: str, tenant: str | None, body: bytes) -> int:
        """A POST's frames for a session of this node, POSTed here or on another node: the
        status of `TAKEN` that answers it."""
        wire = self._open.get(session)
        if wire is None or not wire.open:
            return 404
        if wire.sub != sub or wire.tenant != tenant:
            return 403
        frames = frames_of(body)
        if isinstance(frames, int):
            return frames
        return 202 if wire.take(frames) else 429

    async def taken(self, session: str, sub: str, tenant: str | None, body: bytes) -> int:
        """`take`, for the node that forwarded the POST (`hub.mailbox.OnRequest`)."""
        return self.take(session, sub, tenant, body)


class _Stream(Response):
    """The response of an accepted `GET /v1/stream`: the stream itself."""

    def __init__(self, streams: Streams, wire: StreamWire, session: Session) -> None:
        super().__init__()
        self._streams = streams
        self._wire = wire
        self._session = session

    async def __call__(self, _scope: Scope, receive: Receive, send: Send) -> None:
        await self._streams.run(self._wire, self._session, send, receive)
