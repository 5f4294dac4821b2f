"""Connections before their request is read: bounded in time, in header size, and in number.

uvicorn's HTTP protocol (httptools) waits for ever for headers that never finish, takes
headers of any size, and hands an upgrade with an over-long header line to a WebSocket
parser that refuses it without answering. `HubHttpProtocol` is that protocol with three
bounds: a request's headers must arrive within `HUB_HEADER_TIMEOUT` (else 408), be at most
`HUB_MAX_HEADER_BYTES` with no line over `MAX_LINE` (else 431), and at most
`HUB_MAX_PENDING_REQUESTS` connections may be waiting for their headers at once: past that,
the one that has waited longest is dropped (408) for the new one, so idle or trickling peers
cannot take the descriptors that health checks and real clients need (a request that is
sent at once always gets in).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hub.config import Settings
from hub.errors import error_body

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

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.pending) >= self.max_pending:
            oldest = next(iter(self.pending))
            oldest._refuse(408, "bad_request", "request headers too slow: others are waiting")
        self._await_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self not in self.pending:
            self._await_headers()  # the next request on a kept-alive connection

    def on_headers_complete(self) -> None:
        self._headers_done()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_done()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self in self.pending and self._too_large(data):
            self._refuse(
                431,
                "bad_request",
                f"request headers over {self.max_header_bytes} bytes or a line over {MAX_LINE}",
            )
            return
        super().data_received(data)

    def _await_headers(self) -> None:
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

    def _too_slow(self) -> None:
        self._deadline = None
        self._refuse(
            408, "bad_request", f"request headers not complete within {self.header_timeout:g} s"
        )

    def _refuse(self, status: int, code: str, message: str) -> None:
        self._headers_done()
        if not self.transport.is_closing():
            self.transport.write(refusal(status, code, message))
            self.transport.close()
