"""The event-stream wire: a session carried by one streaming HTTP response (Server-Sent
Events) one way, and by POSTed frames the other, for screens behind proxies that refuse
WebSocket upgrades.

It is a `hub.wire.Wire` like a socket: the session, its rooms, limits and reaping do not
know the difference. Once the response's headers are out, a write goes straight to the
connection's transport as one HTTP chunk, as a socket's frame does: no task wakes for it,
and nothing waits. What the transport holds is what waits for the peer, so a stream that
is not read is shed by its sender as a socket is (4009).
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from typing import Any

from starlette.types import Receive, Send

from hub import sse
from hub.disconnect import Disconnect
from hub.http import STREAM_PATH
from hub.wire import Message, Peer

DRAIN_POLL = 0.05
"""Seconds between two looks at a paced replay's backlog."""
CLOSE_TIMEOUT = 5.0
"""How long a stream the node ended may take to send its last message before it is dropped."""
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
        "_early",
        "_finished",
        "_gone",
        "_in",
        "_inbox_limit",
        "_quiet",
        "_readable",
        "_started",
        "_ticking",
        "_transport",
        "_wrote",
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
        transport: asyncio.WriteTransport,
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
        self._started = False
        """The headers are out: writes go to the transport."""
        self._early: list[bytes] = []
        """Written before the headers went out (the welcome, most often)."""
        self._wrote = False
        """Something was written since the last tick of the quiet timer."""
        self._ticking: asyncio.TimerHandle | None = None
        self._in: deque[str] = deque()
        self._readable = asyncio.Event()
        self._finished = asyncio.Event()
        """The node ended the session, or the client went: the response ends."""

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
        if self._started:
            self._transport.write(sse.chunk(frames))
            self._wrote = True
        else:
            self._early.append(sse.messages(frames))
        return self.buffered()

    def _send(self, data: bytes) -> None:
        if self._started:
            self._transport.write(sse.chunked(data))
            self._wrote = True
        else:
            self._early.append(data)

    def buffered(self) -> int:
        early = sum(map(len, self._early)) if self._early else 0
        return early + self._transport.get_write_buffer_size()

    async def drained(self) -> None:
        """Looked at every `DRAIN_POLL`: the transport tells uvicorn's protocol when it
        drains, not the wire (only a paced replay waits here)."""
        while self.open and self.buffered() > 0:  # noqa: ASYNC110
            await asyncio.sleep(DRAIN_POLL)

    def close(self, cause: Disconnect) -> None:
        if not self.open:
            return
        self._cause = cause
        self._send(sse.close_message(cause))
        self._closing = True
        self._readable.set()
        self._finished.set()
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._drop)

    def _drop(self) -> None:
        if not self._gone:
            self._transport.abort()

    def _tick(self) -> None:
        """Every quiet interval: a comment, unless something else was written meanwhile."""
        if not self._wrote and self.open:
            self._send(sse.COMMENT)
        self._wrote = False
        self._ticking = asyncio.get_running_loop().call_later(self._quiet, self._tick)

    def _ended(self) -> None:
        """The response is over: nothing more goes either way. The session and its wire
        would otherwise hold each other in a cycle, kept until a full collection (the
        socket's transport lets go of its session the same way)."""
        self.peer = None
        self._gone = True
        if self._ticking is not None:
            self._ticking.cancel()
            self._ticking = None
        self._readable.set()
        self._finished.set()

    async def serve(self, send: Send, receive: Receive) -> None:
        """The response: its headers and what was written before them through ASGI (which
        makes it chunked), then, from the transport, what is written as it comes and a
        comment when the stream was quiet too long, until the node ends the session or
        the client goes; the last chunk through ASGI again."""
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        early, self._early = b"".join(self._early) or sse.COMMENT, []
        await send({"type": "http.response.body", "body": early, "more_body": True})
        self._started = True
        if self._early:  # written while the headers went out
            late, self._early = b"".join(self._early), []
            self._send(late)
        watch = asyncio.create_task(self._watch(receive))
        self._ticking = asyncio.get_running_loop().call_later(self._quiet, self._tick)
        try:
            await self._finished.wait()
            if not self._gone:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watch.cancel()
            self._ended()

    async def _watch(self, receive: Receive) -> None:
        """The client's side of the connection: its end ends the session."""
        while (await receive())["type"] != "http.disconnect":
            pass
        self._ended()
