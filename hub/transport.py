"""The fast write path: pre-framed bytes straight onto a socket's transport.

Starlette keeps routing and the handshake; once a socket is accepted, the hub writes to it
through `FrameWriter`, never through an awaited ASGI `send`. `HubWebSocketProtocol` is
uvicorn's sans-I/O WebSocket protocol with that writer exposed to the app through the
ASGI scope (`scope["extensions"]["hub.writer"]`). Writing an already-framed message costs
a few microseconds and never waits on the peer; `write` returns how much now waits for
the kernel, and how much may pile up is the caller's decision.
"""

from __future__ import annotations

from typing import Any, Protocol

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from hub.disconnect import PING_TIMEOUT, SHUTDOWN, Disconnect

WRITER_EXTENSION = "hub.writer"
CLOSE_TIMEOUT = 5.0


class Listener(Protocol):
    def pinged(self) -> None:
        """The peer sent a ping, and its pong is queued."""


class FrameWriter(Protocol):
    """What a session needs from its socket to send, and to know why it closed."""

    @property
    def cause(self) -> Disconnect | None:
        """Why the hub closed the socket, if it did (None: the peer went)."""

    listener: Listener | None
    """Told of each ping from the peer, once the server has queued its pong."""

    def write(self, frame: bytes) -> int:
        """Queue already-framed WebSocket messages, never blocking; return the bytes now
        waiting for the kernel (0 once the socket is closing)."""

    def buffered(self) -> int:
        """Bytes written but not yet taken by the kernel."""

    async def drained(self) -> None:
        """Return once the kernel has taken most of what waits (or the socket is gone)."""

    def close(self, cause: Disconnect) -> None:
        """Send a close frame and drop the socket if the peer does not answer in time."""


class HubWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, plus the `FrameWriter` verbs."""

    cause: Disconnect | None
    listener: Listener | None

    def __init__(
        self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # Set here, with uvicorn's own attributes, so that every socket's attributes stay
        # in one shared layout (one set later would give each socket a dict of its own).
        self.cause = None
        self.listener = None

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][WRITER_EXTENSION] = self

    def write(self, frame: bytes) -> int:
        transport = self.transport
        if self.close_sent or transport.is_closing():
            return 0
        transport.write(frame)
        waiting: int = transport.get_write_buffer_size()
        return waiting

    def buffered(self) -> int:
        size: int = self.transport.get_write_buffer_size()
        return size

    async def drained(self) -> None:
        # uvicorn's own flow control: cleared past the transport's high-water mark, set
        # below its low-water mark and when the connection is lost.
        await self.writable.wait()

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            # A refused handshake (401, 403, 429) is a finished exchange; without this,
            # uvicorn logs an error for every refusal and tries to answer 500 as well.
            self.handshake_complete = True

    def handle_ping(self) -> None:
        """The pong goes out at once, past the write path: whoever sends and receives
        frames must count it, or pings that are never read make the node buffer without
        bound."""
        super().handle_ping()
        if self.listener is not None:
            self.listener.pinged()

    def keepalive_timeout(self) -> None:
        """The peer missed a pong: record why the socket goes, then drop it."""
        if not (self.close_sent or self.transport.is_closing()):
            self._closing(PING_TIMEOUT)
        super().keepalive_timeout()

    def shutdown(self) -> None:
        """Server shutdown: close as uvicorn does, but never wait on a peer that stopped reading."""
        if not self.close_sent:
            self.cause = self.cause or SHUTDOWN
        super().shutdown()
        self.loop.call_later(CLOSE_TIMEOUT, self.transport.abort)

    def close(self, cause: Disconnect) -> None:
        if self.close_sent or self.transport.is_closing():
            return
        self.conn.send_close(cause.code, cause.reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self._closing(cause)
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        # A peer that stopped reading never sees the close frame: abort rather than wait.
        self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, self.transport.abort)

    def _closing(self, cause: Disconnect) -> None:
        """Tell the app the socket is going, and why."""
        self.cause = cause
        self.queue.put_nowait(
            {"type": "websocket.disconnect", "code": cause.code, "reason": cause.reason}
        )
