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
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from hub.auth import Role, issue_token
from loadtest.wire import RawSocket, open_socket

SECRET = "bench-secret-that-is-long-enough-for-hs256"


def raise_file_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class _Counter(RawSocket):
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


async def _receive(ports: list[int], first: int, count: int, shared: dict[str, Any]) -> None:
    sockets = []
    for i in range(first, first + count):
        token = issue_token(SECRET, sub=f"dev-{i}", role=Role.DEVICE, tenant="bench", ttl=3600)
        port = ports[i % len(ports)]
        source = f"127.0.0.{2 + i % 200}"
        sockets.append(await open_socket(lambda: _Counter(shared), port, token, source))
    await asyncio.wait_for(asyncio.gather(*(s.ready for s in sockets)), 120)


def _receiver(ports: list[int], first: int, count: int, pipe: Connection, sample: int) -> None:
    """One receiver process: connect, say ready, then hand over its counts when asked."""
    raise_file_limit()
    shared: dict[str, Any] = {"frames": 0, "latencies": [], "sample": sample}

    async def main() -> None:
        await _receive(ports, first, count, shared)
        pipe.send("ready")
        while True:
            await asyncio.sleep(0.1)
            if pipe.poll():
                pipe.recv()
                pipe.send((shared["frames"], shared["latencies"]))
                shared["frames"], shared["latencies"] = 0, []

    asyncio.run(main())


@contextlib.asynccontextmanager
async def publisher(port: int, sub: str, rooms: list[str]) -> AsyncIterator[ClientConnection]:
    """A dashboard socket allowed to publish to `rooms`, past its welcome."""
    token = issue_token(
        SECRET, sub=sub, role=Role.DASHBOARD, tenant="bench", ttl=3600, extra={"publish": rooms}
    )
    async with connect(
        f"ws://127.0.0.1:{port}/v1/ws",
        additional_headers={"Authorization": f"Bearer {token}"},
        compression=None,
    ) as ws:
        await ws.recv()
        yield ws


async def _publish(port: int, rate: float, seconds: float, size: int) -> int:
    """Publish `rate` events/s for `seconds` over one socket; acks are read and ignored."""
    pad = "x" * max(0, size - 110)
    sent = 0
    async with publisher(port, "bench-publisher", ["devices"]) as ws:

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
                "room": "devices",
                "event": "x.bench",
                "ref": n,
                "data": {"sent": time.time() * 1000, "pad": pad},
            }
            await ws.send(orjson.dumps(frame).decode())
            sent += 1
        await asyncio.sleep(1.0)
        reader.cancel()
    return sent


def start_node(
    name: str, port: int, redis_url: str | None, cpu: str | None, **settings: str
) -> Any:
    """Start `hub serve` (pinned with taskset when asked) and wait until it is ready."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(
        HUB_JWT_SECRET=SECRET,
        HUB_NODE_ID=name,
        HUB_CLIENT_RATE="0",
        HUB_CONNECT_RATE="0",
        HUB_BROADCAST_RATE="0",
        HUB_LOG_LEVEL="warning",
    )
    if redis_url:
        env["HUB_REDIS_URL"] = redis_url
    env.update({f"HUB_{key.upper()}": value for key, value in settings.items()})
    command = [sys.executable, "-m", "hub", "serve", "--port", str(port)]
    if cpu is not None and shutil.which("taskset"):
        command = ["taskset", "-c", cpu, *command]
    process = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"node {name} did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=2000)
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
    raise_file_limit()

    nodes = args.nodes if args.redis_url else 1
    ports = [20000 + os.getpid() % 10000 + i for i in range(nodes)]
    servers = [
        start_node(
            f"bench-{i}",
            port,
            args.redis_url,
            args.server_cpu,
            **dict(item.split("=", 1) for item in args.set),
        )
        for i, port in enumerate(ports)
    ]
    context = mp.get_context("spawn")
    per = -(-args.subscribers // args.procs)
    pipes = [context.Pipe() for _ in range(args.procs)]
    receivers = [
        context.Process(
            target=_receiver,
            args=(ports, p * per, min(per, args.subscribers - p * per), pipes[p][1], args.sample),
            daemon=True,
        )
        for p in range(args.procs)
    ]
    results: list[dict[str, Any]] = []
    try:
        for receiver in receivers:
            receiver.start()
        for mine, _ in pipes:
            if not mine.poll(180) or mine.recv() != "ready":
                raise RuntimeError("a receiver process did not connect in time")
        for rate in [float(r) for r in args.rate.split(",")]:
            sent = asyncio.run(_publish(ports[-1], rate, args.seconds, args.size))
            expected = sent * args.subscribers
            frames, latencies = 0, []
            # Collect until everything arrived, or nothing more arrives for two seconds.
            quiet_since = time.monotonic()
            while frames < expected and time.monotonic() - quiet_since < 2.0:
                before = frames
                for mine, _ in pipes:
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
            row = {
                "rate": rate,
                "published": sent,
                "expected": expected,
                "delivered": frames,
                "loss": expected - frames,
                "delivered_per_s": round(frames / args.seconds),
                "p50_ms": round(statistics.median(latencies), 2) if latencies else None,
                "p99_ms": round(latencies[int(len(latencies) * 0.99)], 2) if latencies else None,
                "max_ms": round(latencies[-1], 2) if latencies else None,
            }
            results.append(row)
            print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    finally:
        for receiver in receivers:
            receiver.kill()
        for server in servers:
            server.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=10)
            server.kill()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(orjson.dumps({"args": vars(args), "steps": results}).decode())


if __name__ == "__main__":
    main()
