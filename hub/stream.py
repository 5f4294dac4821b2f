"""The event-stream wire: a session carried by one streaming HTTP response (Server-Sent
Events) one way, and by POSTed frames the other, for screens behind proxies that refuse
WebSocket upgrades.

It is a `hub.wire.Wire` like a socket: the session, its rooms, limits and reaping do not
know the difference. Writes never wait: what the response has not sent yet is counted as
waiting, so a stream that is not read is shed by its sender as a socket is (4009).
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from typing import Any

from starlette.types import Receive, Send

from hub import sse
from hub.disconnect import Disconnect
from hub.wire import Message, Peer

CLOSE_TIMEOUT = 5.0
"""How long a stream the node ended may take to send its last message before it is dropped."""
STREAM_PATH = "/v1/stream"
HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
    (b"access-control-allow-origin", b"*"),
]
"""`no-transform` and `X-Accel-Buffering` ask proxies not to buffer or compress the stream;
any page may read it, as any may open a socket: the token decides."""


def new_session_id() -> str:
    """128 random bits: a session's POSTs need its token too, but the id alone must not be
    guessable either."""
    return secrets.token_urlsafe(16)


class StreamWire:
    """One session's event stream. `serve` is the response; `take` is a POST's frames."""

    __slots__ = (
        "_cause",
        "_closing",
        "_drained",
        "_gone",
        "_in",
        "_in_flight",
        "_inbox_limit",
        "_out",
        "_out_bytes",
        "_quiet",
        "_readable",
        "_transport",
        "_writable",
        "id",
        "peer",
        "sub",
        "tenant",
    )

    def __init__(
        self,
        sub: str,
        tenant: str | None,
        quiet: float,
        inbox_limit: int,
        transport: asyncio.WriteTransport | None,
    ) -> None:
        self.id = new_session_id()
        self.sub = sub
        self.tenant = tenant
        self.peer: Peer | None = None
        self._quiet = quiet
        """The longest the stream stays silent: a comment is written after that."""
        self._inbox_limit = inbox_limit
        self._transport = transport
        self._cause: Disconnect | None = None
        self._closing = False
        self._gone = False
        self._in: deque[str] = deque()
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._in_flight = 0
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._drained = asyncio.Event()

    @property
    def hello(self) -> dict[str, Any]:
        """What the welcome says of this stream: its session, and where its frames go."""
        return {"session": self.id, "post": f"{STREAM_PATH}/{self.id}"}

    @property
    def cause(self) -> Disconnect | None:
        return self._cause

    @property
    def open(self) -> bool:
        return not (self._closing or self._gone)

    def keepalive(self, seconds: float) -> None:
        """The device's own keepalive: the longest the stream stays silent."""
        self._quiet = seconds

    def take(self, frames: list[str]) -> bool:
        """Queue a POST's frames for the session, in order; False when they do not fit in
        what the session has still to read (the client waits for answers and retries)."""
        if len(self._in) + len(frames) > self._inbox_limit:
            return False
        self._in.extend(frames)
        self._readable.set()
        return True

    async def read(self) -> Message | None:
        while not self._in:
            if not self.open:
                return None
            self._readable.clear()
            await self._readable.wait()
        return self._in.popleft()

    def write(self, frames: bytes) -> int:
        if not self.open:
            return 0
        data = sse.messages(frames)
        self._out.append(data)
        self._out_bytes += len(data)
        self._writable.set()
        return self.buffered()

    def buffered(self) -> int:
        transport = self._transport
        kernel = transport.get_write_buffer_size() if transport is not None else 0
        return self._out_bytes + self._in_flight + kernel

    async def drained(self) -> None:
        while self.open and self.buffered() > 0:
            self._drained.clear()
            await self._drained.wait()

    def close(self, cause: Disconnect) -> None:
        if not self.open:
            return
        self._cause = cause
        self._out.append(sse.close_message(cause))
        self._closing = True
        self._readable.set()
        self._writable.set()
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._drop)

    def _drop(self) -> None:
        if self._transport is not None and not self._gone:
            self._transport.abort()

    def _ended(self) -> None:
        """The response is over: nothing more goes either way. The session and its wire
        would otherwise hold each other in a cycle, kept until a full collection (the
        socket's transport lets go of its session the same way)."""
        self.peer = None
        self._gone = True
        self._readable.set()
        self._writable.set()
        self._drained.set()

    async def serve(self, send: Send, receive: Receive) -> None:
        """The response: headers, then what is written as it comes, a comment when the
        stream was quiet too long, until the node ends the session or the client goes."""
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        watch = asyncio.create_task(self._watch(receive))
        try:
            await self._pump(send)
            if not self._gone:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watch.cancel()
            self._ended()

    async def _pump(self, send: Send) -> None:
        while not self._gone:
            if not self._out:
                if self._closing:
                    return
                self._writable.clear()
                try:
                    await asyncio.wait_for(self._writable.wait(), self._quiet)
                except TimeoutError:
                    self._out.append(sse.COMMENT)
                    self._out_bytes += len(sse.COMMENT)
                continue
            chunk = b"".join(self._out)
            self._out.clear()
            self._out_bytes = 0
            self._in_flight = len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            self._in_flight = 0
            self._drained.set()

    async def _watch(self, receive: Receive) -> None:
        """The client's side of the connection: its end ends the session."""
        while (await receive())["type"] != "http.disconnect":
            pass
        self._ended()
