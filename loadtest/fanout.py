"""Single-room fan-out benchmark: delivered events per second, latency and loss.

Starts its own hub node(s), opens N device sockets (all in room `devices`) spread over
receiver processes that count frames straight from the byte stream and decode only a
sample for latency, then publishes at each requested rate for a fixed time.

    python -m loadtest.fanout --subscribers 2000 --rate 25,50,75 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import signal
import statistics
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from hub.auth import Role, issue_token
from loadtest.processes import SECRET, free_port, raise_file_limit, start_node
from loadtest.wire import RawSocket, open_many


class FrameCounter(RawSocket):
    """Counts the event frames of one socket; decodes every `sample`-th for latency."""

    def __init__(self, shared: dict[str, Any]) -> None:
        super().__init__()
        self.shared = shared

    def text(self, buffer: bytearray, start: int, end: int) -> None:
        shared = self.shared
        shared["frames"] += 1
        if shared["frames"] % shared["sample"] == 0:
            sent = orjson.loads(bytes(buffer[start:end])).get("data", {}).get("sent")
            if sent is not None:
                shared["latencies"].append(time.time() * 1000 - sent)


def room_of(device: int, rooms: int) -> str:
    """The room a benchmark device listens in: `devices` for one room, else its location."""
    return "devices" if rooms == 1 else f"location:r{device % rooms}"


async def _receive(
    ports: list[int], first: int, count: int, rooms: int, shared: dict[str, Any]
) -> None:
    def token_of(i: int) -> str:
        extra = {"loc": f"r{i % rooms}"}
        return issue_token(
            SECRET, sub=f"dev-{i}", role=Role.DEVICE, tenant="bench", ttl=3600, extra=extra
        )

    await open_many(lambda: FrameCounter(shared), ports, range(first, first + count), token_of, 120)


def _receiver(
    ports: list[int], first: int, count: int, rooms: int, pipe: Connection, sample: int
) -> None:
    """One receiver process: connect, say ready, then hand over its counts when asked."""
    raise_file_limit()
    shared: dict[str, Any] = {"frames": 0, "latencies": [], "sample": sample}

    async def main() -> None:
        await _receive(ports, first, count, rooms, shared)
        pipe.send("ready")
        while True:
            await asyncio.sleep(0.1)
            if pipe.poll():
                pipe.recv()
                pipe.send((shared["frames"], shared["latencies"]))
                shared["frames"], shared["latencies"] = 0, []

    asyncio.run(main())


@contextlib.asynccontextmanager
async def publisher(
    port: int, sub: str, rooms: list[str], tenant: str = "bench"
) -> AsyncIterator[ClientConnection]:
    """A dashboard socket allowed to publish to `rooms`, past its welcome."""
    token = issue_token(
        SECRET, sub=sub, role=Role.DASHBOARD, tenant=tenant, ttl=3600, extra={"publish": rooms}
    )
    async with connect(
        f"ws://127.0.0.1:{port}/v1/ws",
        additional_headers={"Authorization": f"Bearer {token}"},
        compression=None,
    ) as ws:
        await ws.recv()
        yield ws


async def _publish(port: int, rate: float, seconds: float, size: int, rooms: int) -> int:
    """Publish `rate` events/s for `seconds` over one socket, to the rooms in turn; acks
    are read and ignored."""
    pad = "x" * max(0, size - 110)
    sent = 0
    async with publisher(port, "bench-publisher", ["devices", "location:*"]) as ws:

        async def drain() -> None:
            async for _ in ws:
                pass

        reader = asyncio.create_task(drain())
        start = time.monotonic()
        total = int(rate * seconds)
        for n in range(total):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            frame = {
                "op": "publish",
                "room": room_of(n, rooms),
                "event": "x.bench",
                "ref": n,
                "data": {"sent": time.time() * 1000, "pad": pad},
            }
            await ws.send(orjson.dumps(frame).decode())
            sent += 1
        await asyncio.sleep(1.0)
        reader.cancel()
    return sent


@dataclass
class Setup:
    """One fan-out arrangement: who listens where, and the nodes they listen on."""

    subscribers: int = 2000
    rooms: int = 1
    nodes: int = 1
    redis_url: str | None = None
    server_cpu: str | None = None
    procs: int = 3
    sample: int = 50
    size: int = 200
    settings: dict[str, str] = field(default_factory=dict)


class Swarm:
    """Nodes and receiver processes, connected and ready for publishing steps."""

    def __init__(self, setup: Setup) -> None:
        if setup.subscribers % setup.rooms:
            raise ValueError("subscribers must divide evenly into rooms")
        self.setup = setup
        nodes = setup.nodes if setup.redis_url else 1
        self.ports = [free_port() for _ in range(nodes)]  # clear of the clusters' ports
        self._servers: list[subprocess.Popen[bytes]] = []
        self._receivers: list[BaseProcess] = []
        self._pipes: list[Connection] = []

    def __enter__(self) -> Swarm:
        setup = self.setup
        raise_file_limit()
        try:
            for i, port in enumerate(self.ports):
                self._servers.append(
                    start_node(
                        f"bench-{i}", port, setup.redis_url, setup.server_cpu, **setup.settings
                    )
                )
            context = mp.get_context("spawn")
            per = -(-setup.subscribers // setup.procs)
            for p in range(setup.procs):
                mine, theirs = context.Pipe()
                count = min(per, setup.subscribers - p * per)
                receiver = context.Process(
                    target=_receiver,
                    args=(self.ports, p * per, count, setup.rooms, theirs, setup.sample),
                    daemon=True,
                )
                receiver.start()
                self._receivers.append(receiver)
                self._pipes.append(mine)
            for mine in self._pipes:
                if not mine.poll(180) or mine.recv() != "ready":
                    raise RuntimeError("a receiver process did not connect in time")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        for receiver in self._receivers:
            receiver.kill()
        for server in self._servers:
            server.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=10)
            server.kill()

    def step(self, rate: float, seconds: float) -> dict[str, Any]:
        """Publish at `rate` for `seconds` through the last node; count what arrived."""
        setup = self.setup
        sent = asyncio.run(_publish(self.ports[-1], rate, seconds, setup.size, setup.rooms))
        expected = sent * setup.subscribers // setup.rooms
        frames, latencies = 0, []
        # Collect until everything arrived, or nothing more arrives for two seconds.
        quiet_since = time.monotonic()
        while frames < expected and time.monotonic() - quiet_since < 2.0:
            before = frames
            for mine in self._pipes:
                mine.send("report")
                if not mine.poll(30):
                    raise RuntimeError("a receiver process did not report")
                count, sample = mine.recv()
                frames += count
                latencies += sample
            if frames > before:
                quiet_since = time.monotonic()
            time.sleep(0.2)
        latencies.sort()
        return {
            "rate": rate,
            "published": sent,
            "expected": expected,
            "delivered": frames,
            "loss": expected - frames,
            "delivered_per_s": round(frames / seconds),
            "p50_ms": round(statistics.median(latencies), 2) if latencies else None,
            "p99_ms": round(latencies[int(len(latencies) * 0.99)], 2) if latencies else None,
            "max_ms": round(latencies[-1], 2) if latencies else None,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=2000)
    parser.add_argument("--rooms", type=int, default=1, help="rooms the subscribers spread over")
    parser.add_argument("--rate", default="25,50,75", help="events/s per step, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each step")
    parser.add_argument("--size", type=int, default=200, help="approximate event size, bytes")
    parser.add_argument("--procs", type=int, default=3, help="receiver processes")
    parser.add_argument("--sample", type=int, default=50, help="decode every Nth frame")
    parser.add_argument("--redis-url", help="run --nodes nodes through this Redis")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--server-cpu", help="pin server processes to these CPUs (taskset)")
    parser.add_argument("--out", default="results/fanout.json")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a hub setting"
    )
    args = parser.parse_args()
    setup = Setup(
        subscribers=args.subscribers,
        rooms=args.rooms,
        nodes=args.nodes,
        redis_url=args.redis_url,
        server_cpu=args.server_cpu,
        procs=args.procs,
        sample=args.sample,
        size=args.size,
        settings=dict(item.split("=", 1) for item in args.set),
    )
    results: list[dict[str, Any]] = []
    with Swarm(setup) as swarm:
        for rate in [float(r) for r in args.rate.split(",")]:
            results.append(swarm.step(rate, args.seconds))
            print(" ".join(f"{k}={v}" for k, v in results[-1].items()), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(orjson.dumps({"args": vars(args), "steps": results}).decode())


if __name__ == "__main__":
    main()
