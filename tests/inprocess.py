"""A whole node in this process on the memory broker, with sockets that record what the
hub writes to them: the core tested in milliseconds, without a network."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from typing import Any

import orjson

from hub.auth import Authenticator
from hub.broker import MemoryBroker
from hub.config import Settings
from hub.disconnect import Disconnect
from hub.metrics import Metrics
from hub.node import Node
from hub.presence import MemoryPresence
from hub.session import Session
from hub.stats import Tally
from hub.tracing import tracer_for
from hub.transport import Listener
from tests.support import SECRET


def read_frames(data: bytes) -> list[dict[str, Any]]:
    """The JSON of every unmasked server text frame in `data`, in order."""
    frames = []
    at = 0
    while at < len(data):
        assert data[at] == 0x81, f"not a final text frame at byte {at}"
        size = data[at + 1]
        at += 2
        if size == 126:
            (size,) = struct.unpack_from("!H", data, at)
            at += 2
        elif size == 127:
            (size,) = struct.unpack_from("!Q", data, at)
            at += 8
        frames.append(orjson.loads(data[at : at + size]))
        at += size
    return frames


class RecordingWriter:
    """A socket that keeps every write, and can pretend the kernel stopped taking them."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.cause: Disconnect | None = None
        self.waiting = 0
        """What `write` reports as still waiting for the kernel."""
        self.piling = False
        """Whether writes pile up until the peer reads (`drained`), as on a real socket."""
        self.receive: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.wrote = asyncio.Event()
        self.listener: Listener | None = None

    def ping(self, pong: int) -> None:
        """A ping from the peer, answered past the write path with `pong` bytes queued
        when the session allows it."""
        if self.listener is not None and self.listener.pinged(pong):
            self.waiting += pong

    def write(self, frame: bytes) -> int:
        if self.cause is not None:
            return 0
        self.writes.append(frame)
        self.wrote.set()
        if self.piling:
            self.waiting += len(frame)
        return self.waiting

    def buffered(self) -> int:
        return self.waiting

    async def drained(self) -> None:
        """The peer reads: whatever waited is taken."""
        await asyncio.sleep(0)
        self.waiting = 0

    def close(self, cause: Disconnect) -> None:
        if self.cause is None:
            self.cause = cause
            self.receive.put_nowait(
                {"type": "websocket.disconnect", "code": cause.code, "reason": cause.reason}
            )

    def frames(self) -> list[dict[str, Any]]:
        return [frame for write in self.writes for frame in read_frames(write)]


class Socket:
    """One session of the in-process node, driven like a client would drive a socket."""

    def __init__(self, session: Session, writer: RecordingWriter) -> None:
        self.session = session
        self.writer = writer
        self.task = asyncio.create_task(session.run(self._receive))
        self._seen = 0

    async def _receive(self) -> dict[str, Any]:
        return await self.writer.receive.get()

    def send(self, frame: dict[str, Any] | str | bytes) -> None:
        if isinstance(frame, bytes):
            self.writer.receive.put_nowait({"type": "websocket.receive", "bytes": frame})
            return
        text = frame if isinstance(frame, str) else orjson.dumps(frame).decode()
        self.writer.receive.put_nowait({"type": "websocket.receive", "text": text})

    def disconnect(self) -> None:
        self.writer.receive.put_nowait({"type": "websocket.disconnect", "code": 1000})

    async def next(self, timeout: float = 2.0) -> dict[str, Any]:
        """The next frame the hub wrote that this test has not looked at yet."""
        async with asyncio.timeout(timeout):
            while len(self.writer.frames()) <= self._seen:
                self.writer.wrote.clear()
                await self.writer.wrote.wait()
        self._seen += 1
        return self.writer.frames()[self._seen - 1]

    async def answer(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send a request and return its answer, skipping events."""
        self.send(frame)
        while True:
            got = await self.next()
            if got["type"] != "event":
                return got

    async def settled(self) -> None:
        """Let everything the loop has to do now run."""
        for _ in range(5):
            await asyncio.sleep(0)


class Harness:
    def __init__(self, node: Node, settings: Settings) -> None:
        self.node = node
        self.settings = settings
        self._auth = Authenticator(settings)
        self.sockets: list[Socket] = []

    async def connect(self, token: str) -> Socket:
        writer = RecordingWriter()
        principal = await self._auth.verify(token)
        socket = Socket(Session(self.node, principal, writer, self._auth.verify), writer)
        self.sockets.append(socket)
        welcome = await socket.next()
        assert welcome["type"] == "welcome", welcome
        return socket


def settings(**values: Any) -> Settings:
    return Settings(jwt_secret=SECRET, node_id="core", **values)


@contextlib.asynccontextmanager
async def running(broker: MemoryBroker | None = None, **values: Any) -> AsyncIterator[Harness]:
    """A node on the memory broker (or on `broker`), started, and stopped with every
    socket closed."""
    chosen = settings(**values)
    broker = broker or MemoryBroker()
    retention = chosen.retention
    tally = Tally()
    presence = MemoryPresence(broker, chosen, retention, tally)
    tracer = tracer_for(chosen, environ={})
    node = Node(chosen, "core.run", broker, presence, retention, Metrics(), tally, tracer)
    await node.start()
    harness = Harness(node, chosen)
    try:
        yield harness
    finally:
        for socket in harness.sockets:
            socket.disconnect()
        await asyncio.gather(*(s.task for s in harness.sockets), return_exceptions=True)
        await node.stop()
