"""Connections before their request is read: bounded in time, in header size, and in number.

uvicorn's HTTP protocol (httptools) waits for ever for headers that never finish, takes
headers of any size, and hands an upgrade with an over-long header line to a WebSocket
parser that refuses it without answering. `HubHttpProtocol` is that protocol with three
bounds: a request's headers must arrive within `HUB_HEADER_TIMEOUT` (else 408), be at most
`HUB_MAX_HEADER_BYTES` with no line over `MAX_LINE` (else 431, read past as `hub.linger`
says, so that the peer still sending them reads the answer), and at most
`HUB_MAX_PENDING_REQUESTS` connections may be waiting for their headers at once, those kept
alive between two requests included: past that, the one that has waited longest is dropped
(408, or just closed between requests) for the new one, so idle or trickling peers cannot
take the descriptors that health checks and real clients need (a request that is sent at
once always gets in). The open-file limit may lower that cap (hub/descriptors.py).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hub.config import Settings
from hub.errors import error_body
from hub.linger import LINGER_BYTES, LINGER_SECONDS, drop

STREAM_PATH = "/v1/stream"
TRANSPORT_EXTENSION = "hub.transport"
"""The connection's transport, in an event stream's scope: the stream writes to it, its
write buffer is what waits for the peer, and a stream that will not take its last message
is dropped with it."""
MAX_LINE = 8192
"""The longest header line: what the WebSocket handshake parser takes."""

_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large"}


def refusal(status: int, code: str, message: str) -> bytes:
    """A whole HTTP response that refuses a request and closes its connection."""
    body = orjson.dumps(error_body(code, message))
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class HubHttpProtocol(HttpToolsProtocol):
    header_timeout: ClassVar[float] = 10.0
    max_header_bytes: ClassVar[int] = 16384
    max_pending: ClassVar[int] = 1000
    pending: ClassVar[dict[HubHttpProtocol, None]] = {}
    """This process's connections whose request headers have not all arrived yet, the
    longest waiting first."""

    @classmethod
    def limit(cls, settings: Settings) -> None:
        """Take the bounds from the settings (in each worker process, as it builds its app)."""
        cls.header_timeout = settings.header_timeout
        cls.max_header_bytes = settings.max_header_bytes
        cls.max_pending = settings.max_pending_requests

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._line = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._lingered: int | None = None
        """Bytes read since a refusal that lingers (None: no refusal)."""
        self._idle = False
        """Kept alive after a response, before the next request's first byte."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.pending) >= self.max_pending:
            next(iter(self.pending))._make_room()
        self._await_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._idle or self not in self.pending:
            self._await_headers()  # the next request on a kept-alive connection

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:
            # Kept alive, it waits for its next request's headers: one of the pending, or
            # peers that send a request and then nothing would take the descriptors.
            self._idle = True
            self.pending[self] = None
            self._header_bytes = self._line = 0

    def on_headers_complete(self) -> None:
        self._headers_done()
        super().on_headers_complete()
        if self.scope.get("path") == STREAM_PATH and not self.parser.should_upgrade():
            # Only a stream's scope: an upgraded connection's HTTP protocol waits in a
            # cycle for the collector, and would keep the dict with it, per socket.
            extensions: dict[str, Any] = {TRANSPORT_EXTENSION: self.transport}
            self.scope["extensions"] = extensions

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_done()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingered is not None:
            self._linger(len(data))
        elif self in self.pending and self._too_large(data):
            self._refuse(
                431,
                "bad_request",
                f"request headers over {self.max_header_bytes} bytes or a line over {MAX_LINE}",
                linger=True,
            )
        else:
            super().data_received(data)

    def _await_headers(self) -> None:
        self._idle = False
        self.pending[self] = None
        self._header_bytes = self._line = 0
        self._deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def _headers_done(self) -> None:
        self.pending.pop(self, None)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_large(self, data: bytes) -> bool:
        """Count the header bytes in `data` (up to the blank line that ends them)."""
        end = data.find(b"\r\n\r\n")
        headers = data if end < 0 else data[:end]
        self._header_bytes += len(headers)
        lines = headers.split(b"\n")
        longest = max([self._line + len(lines[0]), *map(len, lines[1:])])
        self._line = len(lines[-1]) if len(lines) > 1 else self._line + len(lines[0])
        return self._header_bytes > self.max_header_bytes or longest > MAX_LINE

    def _make_room(self) -> None:
        """Drop this connection, the one waiting longest, for a new one: kept alive between
        requests, it is closed as its keep-alive timeout would; else answered 408."""
        if self._idle:
            self._headers_done()
            self.transport.close()
        else:
            self._refuse(408, "bad_request", "request headers too slow: others are waiting")

    def _too_slow(self) -> None:
        self._deadline = None
        self._refuse(
            408, "bad_request", f"request headers not complete within {self.header_timeout:g} s"
        )

    def _refuse(self, status: int, code: str, message: str, *, linger: bool = False) -> None:
        """Answer and close; with `linger`, for a peer that is still sending, only once it
        has read the answer (its close) or the lingering bounds are reached."""
        self._headers_done()
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(refusal(status, code, message))
        if linger and transport.can_write_eof():
            transport.write_eof()
            self._lingered = 0
            self._deadline = self.loop.call_later(LINGER_SECONDS, drop, transport)
        else:
            transport.close()

    def _linger(self, size: int) -> None:
        """Discard what a refused peer still sends; drop it past `LINGER_BYTES`."""
        self._lingered = (self._lingered or 0) + size
        if self._lingered > LINGER_BYTES:
            drop(self.transport)
