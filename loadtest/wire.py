"""Just enough RFC 6455 for load generators: a raw client socket that upgrades by hand,
parses server frames only as far as their ends, answers pings, and sends frames built
once. Far cheaper per frame than a WebSocket library, so the load side does not limit
what it measures."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Sequence
from typing import TypeVar

KEY = base64.b64encode(b"0123456789abcdef").decode()
MASK = b"\x5a\x1e\xc3\x07"
"""The one mask key of every client frame: frames are then built once and reused."""
TEXT = 0x1
_CLOSE = 0x8
_PING = 0x9
_PONG = 0xA

S = TypeVar("S", bound="RawSocket")


def frame(opcode: int, payload: bytes) -> bytes:
    """A final client-to-server frame, masked as RFC 6455 requires of clients."""
    assert len(payload) < 126, "the load generators send only small frames"
    masked = bytes(byte ^ MASK[i % 4] for i, byte in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + MASK + masked


class RawSocket(asyncio.Protocol):
    """A raw client socket: a hand-made upgrade, then server frames parsed only as far as
    their ends. Pings are answered, the first text frame (the welcome) makes it ready,
    later ones go to `text`, which by default ignores them."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.upgraded = False
        self.closed = False
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, _exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before the welcome"))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.upgraded and not self._upgrade(buffer):
            return
        offset = 0
        while (bounds := _bounds(buffer, offset)) is not None:
            start, end = bounds
            self._frame(buffer[offset] & 0x0F, buffer, start, end)
            offset = end
        del buffer[:offset]

    def _upgrade(self, buffer: bytearray) -> bool:
        """Read the upgrade's answer off `buffer`; True once upgraded."""
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        if not buffer.startswith(b"HTTP/1.1 101"):
            self.ready.set_exception(RuntimeError(bytes(buffer[:80]).decode()))
            self.transport.close()
            return False
        del buffer[: end + 4]
        self.upgraded = True
        return True

    def _frame(self, opcode: int, buffer: bytearray, start: int, end: int) -> None:
        if opcode == _PING:
            self.transport.write(frame(_PONG, bytes(buffer[start:end])))
        elif opcode == _CLOSE:
            self.closed = True
        elif opcode != TEXT:
            return
        elif not self.ready.done():
            self.ready.set_result(None)
        else:
            self.text(buffer, start, end)

    def text(self, buffer: bytearray, start: int, end: int) -> None:
        """A text frame after the welcome, at `buffer[start:end]`."""


def _bounds(buffer: bytearray, offset: int) -> tuple[int, int] | None:
    """Where the payload of the frame at `offset` starts and ends, once it is all there."""
    left = len(buffer) - offset
    if left < 2:
        return None
    size = buffer[offset + 1] & 0x7F
    head = {126: 4, 127: 10}.get(size, 2)
    if left < head:
        return None
    if head > 2:
        size = int.from_bytes(buffer[offset + 2 : offset + head], "big")
    start = offset + head
    return (start, start + size) if left - head >= size else None


async def open_socket(protocol: Callable[[], S], port: int, token: str, source: str) -> S:
    """Connect from `source` and send the upgrade request; the socket is ready at its welcome."""
    loop = asyncio.get_running_loop()
    _, opened = await loop.create_connection(protocol, "127.0.0.1", port, local_addr=(source, 0))
    request = (
        f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    )
    opened.transport.write(request.encode())
    return opened


async def open_many(
    protocol: Callable[[], S],
    ports: Sequence[int],
    numbers: range,
    token_of: Callable[[int], str],
    timeout: float,
) -> list[S]:
    """Open a socket for each number, over the nodes' ports and 200 loopback source
    addresses in turn (one address runs short of ports past 10,000 sockets); return them
    once every one has its welcome."""
    sockets = []
    for i in numbers:
        source = f"127.0.0.{2 + i % 200}"
        sockets.append(await open_socket(protocol, ports[i % len(ports)], token_of(i), source))
    await asyncio.wait_for(asyncio.gather(*(s.ready for s in sockets)), timeout)
    return sockets
