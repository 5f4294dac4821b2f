"""A whole node in this process on the memory broker, with sockets that record what the
hub writes to them: the core tested in milliseconds, without a network."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson

from hub.assembly import Parts, assemble
from hub.auth import Authenticator
from hub.broker import MemoryBroker
from hub.config import Settings
from hub.disconnect import Disconnect
from hub.metrics import Metrics
from hub.node import Node
from hub.presence import MemoryPresence
from hub.publishing import Published, Publisher
from hub.session import Session
from hub.tracing import UNTRACED, PublishTrace
from hub.wire import Message, Peer
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


class LoopbackWire:
    """A `hub.wire.Wire` in the test's process: it keeps every write, takes the peer's
    messages from the test, and can pretend the kernel stopped taking writes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.pongs = 0
        self.cause: Disconnect | None = None
        self.waiting = 0
        """What `write` reports as still waiting for the kernel."""
        self.piling = False
        """Whether writes pile up until the peer reads (`drained`), as on a real socket."""
        self.incoming: asyncio.Queue[Message | None] = asyncio.Queue()
        self.wrote = asyncio.Event()
        self.peer: Peer | None = None
        self.ping_interval: float | None = None
        """What the session asked `keepalive` for: None, the node's."""
        self.hello: dict[str, str] | None = None

    def ping(self, size: int) -> None:
        """A ping of `size` bytes from a peer that never reads its pongs."""
        if self.peer is not None:
            self.peer.pinged(bytes([0x8A, size]) + bytes(size))

    async def read(self) -> Message | None:
        return await self.incoming.get()

    def write(self, frames: bytes) -> int:
        if self.cause is not None:
            return 0
        if frames[0] == 0x8A:
            self.pongs += 1
            self.waiting += len(frames)
            return self.waiting
        self.writes.append(frames)
        self.wrote.set()
        if self.piling:
            self.waiting += len(frames)
        return self.waiting

    def buffered(self) -> int:
        return self.waiting

    async def drained(self) -> None:
        """The peer reads: whatever waited is taken."""
        await asyncio.sleep(0)
        self.waiting = 0

    def keepalive(self, interval: float) -> None:
        self.ping_interval = interval

    def close(self, cause: Disconnect) -> None:
        if self.cause is None:
            self.cause = cause
            self.incoming.put_nowait(None)

    def frames(self) -> list[dict[str, Any]]:
        return [frame for write in self.writes for frame in read_frames(write)]


class Socket:
    """One session of the in-process node, driven like a client would drive a socket."""

    def __init__(self, session: Session, wire: LoopbackWire) -> None:
        self.session = session
        self.wire = wire
        self.task = asyncio.create_task(session.run())
        self._seen = 0

    def send(self, frame: dict[str, Any] | str | bytes) -> None:
        message = frame if isinstance(frame, str | bytes) else orjson.dumps(frame).decode()
        self.wire.incoming.put_nowait(message)

    def disconnect(self) -> None:
        self.wire.incoming.put_nowait(None)

    async def next(self, timeout: float = 2.0) -> dict[str, Any]:
        """The next frame the hub wrote that this test has not looked at yet."""
        async with asyncio.timeout(timeout):
            while len(self.wire.frames()) <= self._seen:
                self.wire.wrote.clear()
                await self.wire.wrote.wait()
        self._seen += 1
        return self.wire.frames()[self._seen - 1]

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
    """A node's parts as the composition root chose them, and sessions made as the app
    makes them."""

    def __init__(self, parts: Parts, metrics: Metrics, settings: Settings) -> None:
        self.parts = parts
        self.metrics = metrics
        self.settings = settings
        self._auth = Authenticator(settings)
        self._sessions = parts.for_sessions(settings, metrics, self._auth.verify)
        self.sockets: list[Socket] = []

    def publish(
        self, tenant: str, rooms: list[str], event: str, data: Any, trace: PublishTrace = UNTRACED
    ) -> asyncio.Future[Published]:
        return self.parts.publisher.publish_soon(tenant, rooms, event, data, trace=trace)

    async def connect(self, token: str) -> Socket:
        wire = LoopbackWire()
        principal = await self._auth.verify(token)
        socket = Socket(Session(self._sessions, principal, wire), wire)
        self.sockets.append(socket)
        welcome = await socket.next()
        assert welcome["type"] == "welcome", welcome
        return socket


def settings(**values: Any) -> Settings:
    return Settings(jwt_secret=SECRET, node_id="core", **values)


def _on(broker: MemoryBroker, parts: Parts, chosen: Settings, metrics: Metrics) -> Parts:
    """`parts` with a broker of the test's own, in place of the one chosen."""
    retention, tally = chosen.retention, parts.tally
    return replace(
        parts,
        node=Node(broker, retention, chosen.state, metrics, tally, parts.tracer),
        publisher=Publisher(chosen, broker, retention, metrics, tally),
        presence=MemoryPresence(broker, chosen, retention, tally),
    )


@contextlib.asynccontextmanager
async def running(broker: MemoryBroker | None = None, **values: Any) -> AsyncIterator[Harness]:
    """A node on the memory broker (or on `broker`), started, and stopped with every
    socket closed."""
    chosen = settings(**values)
    metrics = Metrics()
    parts = assemble(chosen, metrics, environ={})
    if broker is not None:
        parts = _on(broker, parts, chosen, metrics)
    await parts.start()
    harness = Harness(parts, metrics, chosen)
    try:
        yield harness
    finally:
        for socket in harness.sockets:
            socket.disconnect()
        await asyncio.gather(*(s.task for s in harness.sockets), return_exceptions=True)
        await parts.stop()
