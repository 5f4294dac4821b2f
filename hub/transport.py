"""The WebSocket wire: uvicorn's sans-I/O WebSocket protocol as a `hub.wire.Wire`.

Starlette keeps routing and the handshake; once a socket is accepted, its session reads
and writes through the protocol itself (`scope["extensions"]["hub.wire"]`), never through
an awaited ASGI `send`. Writing an already-framed message costs a few microseconds and
never waits on the peer; `write` returns how much now waits for the kernel, and how much
may pile up is the caller's decision.
"""

from __future__ import annotations

from typing import Any, cast

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.typing import BytesLike

from hub.disconnect import INVALID_UTF8, PING_TIMEOUT, SHUTDOWN, Disconnect, refused_frame
from hub.linger import LINGER_BYTES, LINGER_PARSED_BYTES, drop
from hub.wire import Message, Peer

WIRE_EXTENSION = "hub.wire"
CLOSE_TIMEOUT = 5.0
"""How long a socket the node closed waits for the peer's close before it is dropped."""
READ_SLICE = 4096
"""Bytes parsed at a time: what one socket sent is acted on a slice at a time, so a peer
past its budget is stopped before the rest of a large read is parsed, and the loop moves
on after a few milliseconds at most."""
PONG_BOUND = 65536
"""Bytes that may wait for the kernel before a pong is dropped, while no session counts
them (before the handshake is accepted)."""


class PongsWithheld(ServerProtocol):
    """websockets' server side, minus its automatic pongs: the transport sends each pong
    once the socket's budget allows it, and none after the node's close."""

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PING:
            self.events.append(frame)
        else:
            super().recv_frame(frame)

    def pong(self, payload: BytesLike) -> bytes:
        """The framed pong to a ping, for the transport to send when the budget allows."""
        self.send_pong(payload)
        return b"".join(self.data_to_send())

    def close_in(self, data: bytes) -> Frame | None:
        """After the node's close: the peer's close in `data`, if it is there. Nothing is
        answered any more."""
        self.receive_data(data)
        events = self.events_received()
        self.data_to_send()
        closes = [e for e in events if isinstance(e, Frame) and e.opcode is Opcode.CLOSE]
        return closes[-1] if closes else None

    def refusal(self) -> tuple[bytes, Disconnect]:
        """The close the parser sends for a frame it refused, framed, and why."""
        close = self.close_sent
        assert close is not None, "the parser fails a connection with a close"
        return b"".join(self.data_to_send()), refused_frame(close.code, close.reason)

    def lost(self) -> None:
        """The connection is gone: end the parser, whose suspended frame holds this
        protocol (and the handshake's request) in a cycle."""
        self.parser.close()


class HubWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol as a `Wire`. What a peer sends is parsed
    `READ_SLICE` bytes at a time, and no further while the app has a message to take (the
    rest waits, unparsed, with the socket not read). Once the node sends a close, the
    socket lingers: it reads on and discards, answering nothing, until the peer's close,
    `LINGER_BYTES` or `CLOSE_TIMEOUT`, so that the close frame is not lost to a reset."""

    cause: Disconnect | None
    peer: Peer | None
    hello = None  # a socket's welcome says nothing of its wire
    _unread: bytes
    """What arrived while the app had a message to take: parsed once it takes it."""
    _lingered: int
    """Bytes read since the node's close."""

    def __init__(
        self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # uvicorn's own, made a `PongsWithheld` in place: a second one would cost every
        # handshake its construction and leave the first, in a cycle, to the collector.
        self.conn.__class__ = PongsWithheld
        # Set with uvicorn's own, so that every socket's attributes share one layout.
        self.cause = None
        self.peer = None
        self._unread = b""
        self._lingered = 0

    def data_received(self, data: bytes) -> None:
        if self._unread or not self._reading():
            self._unread += data
        else:
            self._parse(data)

    def _reading(self) -> bool:
        """Whether frames are parsed now: not while the app has a message to take, nor
        between the handshake's request and its answer (a refused frame could not be
        answered with a close then)."""
        return not self.read_paused and (self.handshake_complete or not self.handshake_initiated)

    def _parse(self, data: bytes) -> None:
        conn = self.conn
        for at in range(0, len(data), READ_SLICE):
            if self.close_sent:
                self._linger(data[at:])
                return
            if not self._reading():
                self._unread = data[at:]
                self.transport.pause_reading()
                return
            conn.receive_data(data[at : at + READ_SLICE])
            if conn.parser_exc is not None:
                self._refuse_frame()
                return
            self.handle_events()

    def _resume(self) -> None:
        """Parse what waited, then read on unless that paused reading again."""
        if not self._reading():
            return
        unread, self._unread = self._unread, b""
        self._parse(unread)
        if self._reading() and not self.close_sent and not self.transport.is_closing():
            self.transport.resume_reading()

    def handle_events(self) -> None:
        for event in self.conn.events_received():
            if not isinstance(event, Frame):
                if isinstance(event, Request):
                    self.handle_connect(event)
                continue
            opcode = event.opcode
            if opcode is Opcode.PING:
                self._answer_ping(event.data)
            elif opcode is Opcode.PONG:
                self.handle_pong(event)
            elif opcode is Opcode.CLOSE:
                self.handle_close(event)
            elif opcode is Opcode.CONT:
                self.handle_cont(event)
            elif opcode is Opcode.TEXT:
                self.handle_text(event)
            else:
                self.handle_bytes(event)

    def _answer_ping(self, payload: BytesLike) -> None:
        """Hand the framed pong to the session, which sends it within the socket's budget
        (the ping counts as a frame, its pong against the send queue); before there is a
        session, send it within `PONG_BOUND`."""
        if self.close_sent:
            return
        pong = cast(PongsWithheld, self.conn).pong(payload)
        peer = self.peer
        if peer is not None:
            peer.pinged(pong)
        elif self.transport.get_write_buffer_size() + len(pong) <= PONG_BOUND:
            self.transport.write(pong)

    def send_receive_event_to_app(self) -> None:
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return
        if self.curr_msg_data_type == "text":
            try:
                message: Any = {"type": "websocket.receive", "text": data.decode()}
            except UnicodeDecodeError:
                self.close(INVALID_UTF8)
                return
        else:
            message = {"type": "websocket.receive", "bytes": data}
        self.queue.put_nowait(message)
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    async def receive(self) -> Any:
        return self._took(await self.queue.get())

    async def read(self) -> Message | None:
        message = self._took(await self.queue.get())
        if message["type"] == "websocket.disconnect":
            return None
        text: str | None = message.get("text")
        return message["bytes"] if text is None else text

    def _took(self, message: Any) -> Any:
        """Parse on once the app has taken all that waited."""
        if self.read_paused and self.queue.empty():
            self.read_paused = False
            self._resume()
        return message

    def _refuse_frame(self) -> None:
        """A frame the parser refused (too large, malformed): its close goes out, and the
        socket lingers."""
        framed, cause = cast(PongsWithheld, self.conn).refusal()
        self.transport.write(framed)
        self._sent_close(cause)

    def _linger(self, data: bytes) -> None:
        """After the node's close, read on without answering: find the peer's close in the
        first `LINGER_PARSED_BYTES`, discard the rest, drop a peer that sends more than
        `LINGER_BYTES`."""
        parsed = self._lingered
        self._lingered += len(data)
        if self._lingered > LINGER_BYTES:
            drop(self.transport)
            return
        if parsed < LINGER_PARSED_BYTES:
            close = cast(PongsWithheld, self.conn).close_in(data[: LINGER_PARSED_BYTES - parsed])
            if close is not None:
                self.handle_close(close)

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop what ties the socket to its session in a cycle: a node collects cycles
        rarely (`hub.process.tune_collector`), and would keep every closed socket till then."""
        super().connection_lost(exc)
        cast(PongsWithheld, self.conn).lost()
        self.peer = None
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"].pop(WIRE_EXTENSION, None)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][WIRE_EXTENSION] = self

    def write(self, frame: bytes) -> int:
        transport = self.transport
        if self.close_sent or transport.is_closing():
            return 0
        transport.write(frame)
        waiting: int = transport.get_write_buffer_size()  # no call on the hot path to say so
        return waiting

    def buffered(self) -> int:
        return int(self.transport.get_write_buffer_size())

    async def drained(self) -> None:
        await self.writable.wait()  # uvicorn's flow control, set below the low-water mark

    async def send(self, message: Any) -> None:
        await super().send(message)
        kind = message["type"]
        if kind == "websocket.accept":
            self._resume()  # what the peer sent while its handshake was being decided
        elif kind == "websocket.http.response.body" and not message.get("more_body"):
            # A refused handshake is a finished exchange, not an error to answer with 500.
            self.handshake_complete = True

    def keepalive(self, interval: float) -> None:
        """Ping every `interval` seconds, the next one `interval` from now instead of at the
        node's interval from the accept (a ping in flight keeps its pong deadline)."""
        self.ping_interval = interval
        if self.ping_timer is not None:
            self.ping_timer.cancel()
            self.schedule_ping()

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
        self.loop.call_later(CLOSE_TIMEOUT, drop, self.transport)

    def close(self, cause: Disconnect) -> None:
        if self.close_sent or self.transport.is_closing():
            return
        self.conn.send_close(cause.code, cause.reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self._sent_close(cause)

    def _sent_close(self, cause: Disconnect) -> None:
        """The node's close is on its way: tell the app, and linger until the peer's close
        or `CLOSE_TIMEOUT` (uvicorn's `close_timer`, which it cancels at the peer's close
        or the connection's loss, so a closed socket is not kept for its timeout)."""
        self.close_sent = True
        self._closing(cause)
        self.read_paused = False
        unread, self._unread = self._unread, b""
        self.transport.resume_reading()
        self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, drop, self.transport)
        if unread:
            self._linger(unread)

    def _closing(self, cause: Disconnect) -> None:
        """Tell the app the socket is going, and why."""
        self.cause = cause
        self.queue.put_nowait(
            {"type": "websocket.disconnect", "code": cause.code, "reason": cause.reason}
        )
