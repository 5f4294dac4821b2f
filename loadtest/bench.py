"""The benchmark: idle sockets, fan-out in one room (one node, two through Redis), many rooms,
heartbeats; figures as JSON and a chart of latency against delivered rate.

Run the load on one core and pin the server to the other:

    taskset -c 1 python -m loadtest.bench --server-cpu 0

Scenarios (`--only` picks some): `idle` (memory per socket and accepted sockets/s at 10,000
and 19,000 sockets), `fanout` (2,000 subscribers in one room, one node), `cluster` (the same
across two nodes and Redis), `latency` (the cross-node hop at light load: 200 subscribers
over two nodes, every frame timed, so neither side's per-socket work hides it), `rooms`
(2,000 subscribers in 200 rooms), `heartbeats` (loadtest.heartbeats). Every node and the
Redis are the benchmark's own.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from hub.auth import Role, issue_token
from loadtest.fanout import Setup, Swarm
from loadtest.processes import (
    SECRET,
    free_port,
    raise_file_limit,
    rss_bytes,
    start_node,
    start_redis,
)
from loadtest.wire import RawSocket, open_many

SCENARIOS = ("idle", "fanout", "cluster", "latency", "rooms", "heartbeats")
PER_PROCESS = 5000
"""Sockets one idle-load process opens (each process has at most 20,000 open files)."""
IDLE_SETTLE = 3.0
"""Seconds the node rests before its memory is read (presence writes, the collector)."""


def _idle_fleet(port: int, first: int, count: int, pipe: Connection) -> None:
    """Open `count` device sockets, report when all are welcomed, hold them until told."""
    raise_file_limit()

    def token_of(i: int) -> str:
        return issue_token(SECRET, sub=f"idle-{i}", role=Role.DEVICE, tenant="bench", ttl=7200)

    async def main() -> None:
        await open_many(RawSocket, [port], range(first, first + count), token_of, 600)
        pipe.send(time.monotonic())
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)

    asyncio.run(main())


def idle(counts: list[int], cpu: str | None) -> list[dict[str, Any]]:
    """Memory per socket and handshakes accepted per second, one node, idle sockets."""
    rows = []
    context = mp.get_context("spawn")
    for sockets in counts:
        port = free_port()
        node = start_node(
            "idle", port, None, cpu, heartbeat_interval="3000", heartbeat_timeout="6000"
        )
        try:
            time.sleep(IDLE_SETTLE)
            before = rss_bytes(node.pid)
            pipes, fleets = [], []
            started = time.monotonic()
            for first in range(0, sockets, PER_PROCESS):
                mine, theirs = context.Pipe()
                count = min(PER_PROCESS, sockets - first)
                fleet = context.Process(target=_idle_fleet, args=(port, first, count, theirs))
                fleet.start()
                pipes.append(mine)
                fleets.append(fleet)
            done = max(pipe.recv() for pipe in pipes)
            time.sleep(IDLE_SETTLE)
            after = rss_bytes(node.pid)
            row = {
                "sockets": sockets,
                "accepted_per_s": round(sockets / (done - started)),
                "rss_before_mib": round(before / 2**20, 1),
                "rss_after_mib": round(after / 2**20, 1),
                "kib_per_socket": round((after - before) / sockets / 1024, 2),
            }
            rows.append(row)
            _show("idle", row)
            for pipe in pipes:
                pipe.send("stop")
            for fleet in fleets:
                fleet.join(timeout=30)
                fleet.kill()
        finally:
            node.terminate()
            node.wait(timeout=30)
    return rows


def fan_out(name: str, setup: Setup, rates: list[float], seconds: float) -> list[dict[str, Any]]:
    rows = []
    with Swarm(setup) as swarm:
        for rate in rates:
            row = swarm.step(rate, seconds)
            rows.append(row)
            _show(name, row)
    return rows


def heartbeats(cpu: str | None, redis_url: str) -> list[dict[str, Any]]:
    out = Path("results/bench-heartbeats.json")
    command = [sys.executable, "-m", "loadtest.heartbeats", "--redis-url", redis_url]
    command += ["--devices", "2000", "--rate", "interval,5000,10000,15000,20000,25000"]
    command += ["--out", str(out)]
    if cpu is not None:
        command += ["--server-cpu", cpu]
    subprocess.run(command, check=True)
    steps: list[dict[str, Any]] = orjson.loads(out.read_text())["steps"]
    return steps


def chart(results: dict[str, Any], path: Path) -> None:
    """Latency (p50 and p99) against delivered events per second, one line per setup."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5.5))
    for name, label in (
        ("fanout", "one room, one node"),
        ("cluster", "one room, two nodes + Redis"),
        ("rooms", "200 rooms, one node"),
    ):
        rows = sorted(results.get(name, []), key=lambda row: row["delivered_per_s"])
        if not rows:
            continue
        rates = [row["delivered_per_s"] / 1000 for row in rows]
        (line,) = axes.plot(
            rates, [row["p99_ms"] for row in rows], marker="o", label=f"{label}, p99"
        )
        axes.plot(
            rates,
            [row["p50_ms"] for row in rows],
            marker=".",
            linestyle="--",
            color=line.get_color(),
            label=f"{label}, p50",
        )
    axes.axhline(100, color="grey", linewidth=0.8, linestyle=":")
    axes.set_yscale("log")
    axes.set_xlabel("delivered events per second (thousands), server on one core")
    axes.set_ylabel("publish-to-delivery latency (ms, log scale)")
    axes.set_title(
        "hub fan-out: latency against delivered rate (2,000 subscribers, 200-byte events)"
    )
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _show(name: str, row: dict[str, Any]) -> None:
    print(name, " ".join(f"{key}={value}" for key, value in row.items()), flush=True)


def _rates(text: str) -> list[float]:
    return [float(rate) for rate in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SCENARIOS), help="scenarios, comma-separated")
    parser.add_argument("--server-cpu", help="pin the nodes to these CPUs (taskset)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each step")
    parser.add_argument(
        "--subscribers", type=int, default=2000, help="for fanout, cluster and rooms"
    )
    parser.add_argument("--idle", default="10000,19000", help="socket counts for `idle`")
    parser.add_argument("--fanout-rates", default="25,50,75,100,125,150")
    parser.add_argument("--cluster-rates", default="5,25,50,75,90,100")
    parser.add_argument("--latency-rates", default="5,25,100")
    parser.add_argument("--rooms-rates", default="500,1000,2000,4000")
    parser.add_argument("--out", default="results/bench.json")
    parser.add_argument("--chart", default="results/bench.png")
    args = parser.parse_args()
    chosen = args.only.split(",")
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    raise_file_limit()
    redis_server, redis_url = start_redis()
    cpu, subscribers = args.server_cpu, args.subscribers
    runs: dict[str, Callable[[], list[dict[str, Any]]]] = {
        "idle": lambda: idle([int(n) for n in args.idle.split(",")], cpu),
        "fanout": lambda: fan_out(
            "fanout",
            Setup(subscribers=subscribers, server_cpu=cpu),
            _rates(args.fanout_rates),
            args.seconds,
        ),
        "cluster": lambda: fan_out(
            "cluster",
            Setup(subscribers=subscribers, nodes=2, redis_url=redis_url, server_cpu=cpu),
            _rates(args.cluster_rates),
            args.seconds,
        ),
        "latency": lambda: fan_out(
            "latency",
            Setup(subscribers=200, nodes=2, redis_url=redis_url, server_cpu=cpu, sample=1),
            _rates(args.latency_rates),
            args.seconds,
        ),
        "rooms": lambda: fan_out(
            "rooms",
            Setup(subscribers=subscribers, rooms=200, server_cpu=cpu),
            _rates(args.rooms_rates),
            args.seconds,
        ),
        "heartbeats": lambda: heartbeats(cpu, redis_url),
    }
    results: dict[str, Any] = {"args": vars(args)}
    try:
        for name in chosen:
            results[name] = runs[name]()
    finally:
        redis_server.kill()
        redis_server.wait()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    chart(results, Path(args.chart))
    print(f"wrote {out} and {args.chart}")


if __name__ == "__main__":
    main()
