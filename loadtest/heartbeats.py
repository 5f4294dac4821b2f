"""Device heartbeat benchmark: heartbeats/s one node absorbs, and what each costs in Redis.

Starts its own Redis (unless given one) and one hub node, opens N device sockets spread
over processes that write one pre-framed heartbeat round-robin at each requested aggregate
rate for a fixed time, and counts the `device.heartbeat` events a dashboard subscribed to
`status` receives. Node and Redis CPU, Redis commands (those run inside scripts included)
and presence round trips are read before and after each step. The rate `interval` is the
fleet's own pace: every device beats once per 15 s.

    python -m loadtest.heartbeats --devices 2000 --rate interval,5000,10000,20000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import multiprocessing as mp
import resource
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import orjson
from redis.asyncio import Redis

from hub.auth import Role, issue_token
from loadtest.processes import (
    SECRET,
    cpu_seconds,
    free_port,
    raise_file_limit,
    start_node,
    start_redis,
)
from loadtest.wire import TEXT, RawSocket, frame, open_many, open_socket

INTERVAL = 15.0
"""Seconds between two heartbeats of one device at the fleet's own pace (rate `interval`)."""
DEVICE_RATE = 1000
"""Heartbeats per second one device may send (HUB_HEARTBEAT_RATE, 1 by default): a step puts
a whole fleet's rate on a few thousand sockets, many beats per device per second."""
SLICE = 0.01
"""Each device process writes the heartbeats due every this many seconds."""
QUIET = 2.0
"""A step's events are all in once, for this long, the dashboard's count stopped growing
and the node was idle."""
IDLE = 0.25
"""Share of a core under which the node counts as idle: with no heartbeats to read it only
answers pings and refreshes its registration, far below this."""
HEADROOM = 1000
"""Open files kept free under the hard limit, for everything but the device sockets."""
HEARTBEAT = orjson.dumps(
    {
        "op": "heartbeat",
        "data": {"status": "playing", "cpu": 12.5, "mem": 40.1, "temp": 51.0, "uptime": 3600},
    }
)


class _Dashboard(RawSocket):
    """Counts `device.heartbeat` events by a substring search in each frame: cheap enough
    to keep up with what the node publishes, where decoding every frame would not be."""

    def __init__(self) -> None:
        super().__init__()
        self.heartbeats = 0
        self.acked = asyncio.get_running_loop().create_future()

    def text(self, buffer: bytearray, start: int, end: int) -> None:
        if buffer.find(b"device.heartbeat", start, end) >= 0:
            self.heartbeats += 1
        elif not self.acked.done() and buffer.find(b'"type":"ack"', start, end) >= 0:
            self.acked.set_result(None)


def _connect_timeout(sockets: int) -> float:
    """Generous: handshakes run at ~1,700/s on one server core."""
    return 60 + sockets / 200


async def _beat(turn: Iterator[RawSocket], beat: bytes, total: int, seconds: float) -> int:
    """Write `beat` `total` times at an even pace over `seconds`, each time to the next
    socket in `turn`, the writes due every `SLICE`; returns how many went to open sockets."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    rate = total / seconds
    due = written = 0
    while due < total:
        await asyncio.sleep(SLICE)
        now_due = min(total, int(rate * (loop.time() - start)))
        for _ in range(now_due - due):
            device = next(turn)
            if not device.closed:
                device.transport.write(beat)
                written += 1
        due = now_due
    return written


async def _receive(pipe: Connection) -> Any:
    """The next message on `pipe`, waited for by the event loop rather than a blocked
    thread, so that Ctrl-C ends the wait at once."""
    loop = asyncio.get_running_loop()
    readable = loop.create_future()

    def wake() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(pipe.fileno(), wake)
    try:
        await readable
    finally:
        loop.remove_reader(pipe.fileno())
    return pipe.recv()


def _fleet(port: int, first: int, count: int, pipe: Connection) -> None:
    """One device process: connect, say ready, then for each step write the heartbeats asked
    and answer with (heartbeats written, sockets the node closed so far)."""
    raise_file_limit()

    def token_of(i: int) -> str:
        return issue_token(SECRET, sub=f"dev-{i}", role=Role.DEVICE, tenant="bench", ttl=3600)

    async def main() -> None:
        numbers = range(first, first + count)
        sockets = await open_many(RawSocket, [port], numbers, token_of, _connect_timeout(count))
        pipe.send("ready")
        beat = frame(TEXT, HEARTBEAT)
        turn = itertools.cycle(sockets)
        while True:
            total, seconds = await _receive(pipe)
            written = await _beat(turn, beat, total, seconds)
            pipe.send((written, sum(device.closed for device in sockets)))

    asyncio.run(main())


async def _collect(pipes: list[Connection], timeout: float, what: str) -> list[Any]:
    """One answer from every device process, within `timeout` seconds for them all."""
    try:
        return await asyncio.wait_for(asyncio.gather(*map(_receive, pipes)), timeout)
    except TimeoutError:
        raise RuntimeError(f"a device process did not {what} in time") from None


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise RuntimeError(f"{name} is not in /metrics")


@dataclass(frozen=True, slots=True)
class _Probe:
    """Counters read at one moment; a step's figures are differences of two probes."""

    at: float
    node_cpu: float
    redis_cpu: float
    commands: int
    evalsha: int
    round_trips: float
    heartbeats: int


@dataclass(slots=True)
class _Bench:
    """What the steps read: the node, its Redis, and the dashboard that counts events."""

    pid: int
    redis: Redis
    http: httpx.AsyncClient
    dashboard: _Dashboard

    async def probe(self) -> _Probe:
        cpu = await self.redis.info("cpu")
        stats = await self.redis.info("commandstats")
        metrics = (await self.http.get("/metrics")).text
        return _Probe(
            at=time.monotonic(),
            node_cpu=cpu_seconds(self.pid),
            redis_cpu=float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
            # INFO is the benchmark's own command, not the node's.
            commands=sum(s["calls"] for name, s in stats.items() if name != "cmdstat_info"),
            evalsha=stats.get("cmdstat_evalsha", {}).get("calls", 0),
            round_trips=_metric(metrics, "hub_presence_round_trips_total"),
            heartbeats=self.dashboard.heartbeats,
        )

    async def settle(self) -> None:
        """Wait until the node has written every connect to Redis: steps count heartbeats."""
        last = -1.0
        while True:
            writes = _metric((await self.http.get("/metrics")).text, "hub_presence_writes_total")
            if writes == last:
                return
            last = writes
            await asyncio.sleep(1.0)

    async def drain(self) -> None:
        """Wait until, for `QUIET` seconds, the dashboard's count has not grown and the node
        has been idle. A node that fell behind may still be reading the step's heartbeats
        without publishing them for a while (when it drops its presence queue to rebuild
        it): a quiet dashboard alone would hand that backlog to the next step."""
        seen, at, cpu = self.dashboard.heartbeats, time.monotonic(), cpu_seconds(self.pid)
        quiet_since = at
        while at - quiet_since < QUIET:
            await asyncio.sleep(0.2)
            last, last_cpu = at, cpu
            at, cpu = time.monotonic(), cpu_seconds(self.pid)
            if self.dashboard.heartbeats != seen or cpu - last_cpu > IDLE * (at - last):
                seen, quiet_since = self.dashboard.heartbeats, at


async def _run(
    args: argparse.Namespace,
    targets: list[tuple[str, float]],
    port: int,
    pid: int,
    redis_url: str,
    pipes: list[Connection],
    counts: list[int],
) -> list[dict[str, Any]]:
    """Every step, once the devices and the dashboard are connected; one row each."""
    await _collect(pipes, _connect_timeout(args.devices) + 30, "connect")
    token = issue_token(
        SECRET, sub="bench-dashboard", role=Role.DASHBOARD, tenant="bench", ttl=3600
    )
    dashboard = await open_socket(_Dashboard, port, token, "127.0.0.1")
    await asyncio.wait_for(dashboard.ready, 30)
    subscribe = orjson.dumps({"op": "subscribe", "room": "status", "ref": 1})
    dashboard.transport.write(frame(TEXT, subscribe))
    await asyncio.wait_for(dashboard.acked, 30)
    rows = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        bench = _Bench(pid, Redis.from_url(redis_url), http, dashboard)
        try:
            await bench.settle()
            for step, rate in targets:
                before = await bench.probe()
                # Each process's share of the step's heartbeats, in proportion to its sockets.
                total = round(rate * args.seconds)
                bounds = [total * done // args.devices for done in itertools.accumulate(counts)]
                shares = itertools.pairwise([0, *bounds])
                for pipe, (low, high) in zip(pipes, shares, strict=True):
                    pipe.send((high - low, args.seconds))
                answers = await _collect(pipes, args.seconds + 30, "beat")
                stopped = await bench.probe()
                await bench.drain()
                after = await bench.probe()
                if dashboard.closed:
                    raise RuntimeError("the node closed the dashboard: it read too slowly")
                rows.append(_row(args.seconds, step, rate, answers, before, stopped, after))
                print(" ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
        finally:
            await bench.redis.aclose()
    return rows


def _row(
    seconds: float,
    step: str,
    rate: float,
    answers: list[tuple[int, int]],
    before: _Probe,
    stopped: _Probe,
    after: _Probe,
) -> dict[str, Any]:
    """CPU over the sending (`before` to `stopped`); counts until all arrived (`after`)."""
    written = sum(answer[0] for answer in answers)
    delivered = after.heartbeats - before.heartbeats
    elapsed = stopped.at - before.at

    def per_heartbeat(total: float) -> float | None:
        return float(f"{total / delivered:.3g}") if delivered else None

    return {
        "step": step,
        "target_per_s": round(rate),
        "sent": written,
        "sent_per_s": round(written / seconds),
        "delivered": delivered,
        "delivered_per_s": round(delivered / seconds),
        "loss": written - delivered,
        "node_cpu_pct": round(100 * (stopped.node_cpu - before.node_cpu) / elapsed, 1),
        "redis_cpu_pct": round(100 * (stopped.redis_cpu - before.redis_cpu) / elapsed, 1),
        "cmds_per_hb": per_heartbeat(after.commands - before.commands),
        "evalsha_per_hb": per_heartbeat(after.evalsha - before.evalsha),
        "round_trips_per_hb": per_heartbeat(after.round_trips - before.round_trips),
        "closed": sum(answer[1] for answer in answers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument(
        "--rate",
        default="interval,5000,10000,20000",
        help="heartbeats/s per step, comma-separated; `interval` = devices / 15",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each step")
    parser.add_argument("--procs", type=int, default=3, help="device processes")
    parser.add_argument("--server-cpu", help="pin the node to these CPUs (taskset)")
    parser.add_argument(
        "--redis-url", help="use this Redis (its other traffic counts) instead of our own"
    )
    parser.add_argument("--out", default="results/heartbeats.json")
    args = parser.parse_args()
    raise_file_limit()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if args.devices > hard - HEADROOM:
        parser.error(f"--devices must stay under the open-file limit: at most {hard - HEADROOM}")
    targets = [
        (step, args.devices / INTERVAL if step == "interval" else float(step))
        for step in args.rate.split(",")
    ]

    port = free_port()
    per = -(-args.devices // args.procs)
    counts = [max(0, min(per, args.devices - p * per)) for p in range(args.procs)]
    context = mp.get_context("spawn")
    pipes = [context.Pipe() for _ in counts]
    fleets = [
        context.Process(target=_fleet, args=(port, p * per, count, pipes[p][1]), daemon=True)
        for p, count in enumerate(counts)
    ]
    redis_server = node = None
    try:
        redis_url = args.redis_url
        if redis_url is None:
            redis_server, redis_url = start_redis()
        # Nothing is closed for silence: a device beats only when its turn comes.
        node = start_node(
            "heartbeats",
            port,
            redis_url,
            args.server_cpu,
            heartbeat_interval="300",
            heartbeat_timeout="600",
            heartbeat_rate=str(DEVICE_RATE),
            node_ttl="15",
        )
        for fleet in fleets:
            fleet.start()
        mine = [pipe for pipe, _ in pipes]
        rows = asyncio.run(_run(args, targets, port, node.pid, redis_url, mine, counts))
    finally:
        for fleet in fleets:
            if fleet.is_alive():
                fleet.kill()
        if node is not None:
            node.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.wait(timeout=15)
            node.kill()
        if redis_server is not None:
            redis_server.kill()
            redis_server.wait()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(orjson.dumps({"args": vars(args), "steps": rows}).decode())


if __name__ == "__main__":
    main()
