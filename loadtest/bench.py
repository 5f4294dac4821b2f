"""The benchmark: idle sockets, fan-out in one room (one node, two through Redis), many rooms,
heartbeats, welcomes with state, delivery receipts; figures as JSON and a chart of latency
against delivered rate.

Run the load on one core and pin the server to the other:

    taskset -c 1 python -m loadtest.bench --server-cpu 0           # the full run, minutes
    taskset -c 1 python -m loadtest.bench --quick --server-cpu 0   # every scenario, small

Scenarios (`--only` picks some): `idle` (memory per socket and accepted sockets/s at 10,000
and 19,000 sockets), `fanout` (2,000 subscribers in one room, one node), `cluster` (the same
across two nodes and Redis), `latency` (the cross-node hop at light load: 200 subscribers
over two nodes, every frame timed, so neither side's per-socket work hides it), `rooms`
(2,000 subscribers in 200 rooms), `heartbeats` (loadtest.heartbeats), `state` (2,000
devices connecting and reconnecting in waves, each welcome checked for the state of 2,000
rooms: loadtest.state), `receipts` (2,000 devices answering every command with a receipt:
loadtest.receipts); these two run on one node, then on two nodes through Redis; `shards`
(tenants publishing at once through one Redis, then a Redis Cluster of three masters, with
each Redis' CPU: loadtest.shards). `--quick` runs each with fewer sockets and steps
(`QUICK`), to try the tools rather than to measure; any size given on the command line
wins over either profile. Every node and the Redis are
the benchmark's own.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from hub.auth import Role, issue_token
from loadtest import receipts, shards, state
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

SCENARIOS = (
    "idle",
    "fanout",
    "cluster",
    "latency",
    "rooms",
    "heartbeats",
    "state",
    "receipts",
    "shards",
)
ROOMS = 200
"""Rooms of the `rooms` scenario: the subscribers spread evenly over them."""
LATENCY_SUBSCRIBERS = 200
"""Subscribers of the `latency` scenario, over two nodes, every frame timed."""
FULL: dict[str, Any] = {
    "seconds": 5.0,
    "subscribers": 2000,
    "idle": "10000,19000",
    "fanout_rates": "25,50,75,100,125,150",
    "cluster_rates": "5,25,50,75,90,100",
    "latency_rates": "5,25,100",
    "rooms_rates": "500,1000,2000,4000",
    "heartbeat_devices": 2000,
    "heartbeat_rates": "interval,5000,10000,15000,20000,25000",
    "heartbeat_seconds": 10.0,
    "state_devices": 2000,
    "state_rooms": 2000,
    "state_waves": 3,
    "receipt_devices": 2000,
    "receipt_rates": "1,2,5,10,15",
    "receipt_seconds": 5.0,
    "shard_tenants": 12,
    "shard_devices": 50,
}
"""The sizes of the full run: the figures of BENCHMARKS.md."""
QUICK: dict[str, Any] = {
    "seconds": 1.0,
    "subscribers": 400,
    "idle": "1000",
    "fanout_rates": "25,100",
    "cluster_rates": "25,100",
    "latency_rates": "25",
    "rooms_rates": "500,2000",
    "heartbeat_devices": 300,
    "heartbeat_rates": "interval,2000",
    "heartbeat_seconds": 1.0,
    "state_devices": 300,
    "state_rooms": 200,
    "state_waves": 2,
    "receipt_devices": 300,
    "receipt_rates": "2,10",
    "receipt_seconds": 1.0,
    "shard_tenants": 3,
    "shard_devices": 20,
}
"""The sizes of `--quick`: every scenario, small."""
QUICK_SECONDS = 65
"""What `--quick` took, measured, on a 2-core machine (load on one core, nodes on the other)."""
PER_PROCESS = 5000
"""Sockets one idle-load process opens (each process has at most 20,000 open files)."""
IDLE_PENDING = 500
"""`HUB_MAX_PENDING_REQUESTS` of the idle node: with the default 1,000, 19,000 sockets and
what a node holds besides would not fit 20,000 open files, and the node would lower its
socket cap below 19,000 (hub/descriptors.py)."""
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
            "idle",
            port,
            None,
            cpu,
            heartbeat_interval="3000",
            heartbeat_timeout="6000",
            max_connections=str(sockets),
            max_pending_requests=str(IDLE_PENDING),
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


def _shown(name: str, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every row of a scenario, each printed as it comes."""
    kept = []
    for row in rows:
        _show(name, row)
        kept.append(row)
    return kept


def heartbeats(
    cpu: str | None, redis_url: str, devices: int, rates: str, seconds: float, out: Path
) -> list[dict[str, Any]]:
    command = [sys.executable, "-m", "loadtest.heartbeats", "--redis-url", redis_url]
    command += ["--devices", str(devices), "--rate", rates, "--seconds", str(seconds)]
    command += ["--out", str(out)]
    if cpu is not None:
        command += ["--server-cpu", cpu]
    subprocess.run(command, check=True)
    steps: list[dict[str, Any]] = orjson.loads(out.read_text())["steps"]
    return steps


def title(args: dict[str, Any]) -> str:
    """What was run, for the chart and the JSON: the profile, the scenarios and their sizes."""
    chosen = args["only"].split(",")
    profile = "quick run (--quick)" if args["quick"] else "full run"
    sizes = []
    if "idle" in chosen:
        sizes.append(f"idle: {_counts(args['idle'])} sockets")
    subscribers = f"{args['subscribers']:,} subscribers"
    one_room = [name for name in ("fanout", "cluster") if name in chosen]
    if one_room:
        sizes.append(f"{', '.join(one_room)}: {subscribers} in one room")
    if "rooms" in chosen:
        sizes.append(f"rooms: {subscribers} in {ROOMS} rooms")
    if "latency" in chosen:
        sizes.append(f"latency: {LATENCY_SUBSCRIBERS} subscribers")
    if {"fanout", "cluster", "rooms", "latency"} & set(chosen):
        sizes.append(f"200-byte events, {args['seconds']:g} s steps")
    if "heartbeats" in chosen:
        devices, seconds = args["heartbeat_devices"], args["heartbeat_seconds"]
        sizes.append(f"heartbeats: {devices:,} devices, {seconds:g} s steps")
    if "state" in chosen:
        devices, rooms, waves = args["state_devices"], args["state_rooms"], args["state_waves"]
        sizes.append(f"state: {devices:,} devices, {rooms:,} rooms with state, {waves} waves")
    if "receipts" in chosen:
        devices, seconds = args["receipt_devices"], args["receipt_seconds"]
        sizes.append(f"receipts: {devices:,} devices, {seconds:g} s steps")
    return "\n".join(
        [f"hub benchmark, {profile}: {', '.join(chosen)}", *textwrap.wrap("; ".join(sizes), 100)]
    )


def _counts(text: str) -> str:
    return " and ".join(f"{int(n):,}" for n in text.split(","))


def chart(results: dict[str, Any], path: Path) -> None:
    """Latency (p50 and p99) against delivered events per second, one line per setup; when
    receipts ran, a panel of their ack latency against receipts acknowledged per second
    (beside it, or alone when no fan-out ran)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fan_out = {
        "one room, one node": results.get("fanout", []),
        "one room, two nodes + Redis": results.get("cluster", []),
        f"{ROOMS} rooms, one node": results.get("rooms", []),
    }
    acked = results.get("receipts", [])
    drawn = any(fan_out.values()) or not acked
    count = drawn + bool(acked)
    figure, panels = plt.subplots(1, count, figsize=(8 * count + 1, 5.5), squeeze=False)
    if drawn:
        for label, rows in fan_out.items():
            _lines(panels[0][0], rows, "delivered_per_s", label)
        _finish(panels[0][0], "delivered events", "publish-to-delivery latency")
    if acked:
        for setup in dict.fromkeys(row["setup"] for row in acked):
            rows = [row for row in acked if row["setup"] == setup]
            _lines(panels[0][-1], rows, "acked_per_s", f"receipts, {setup}")
        _finish(panels[0][-1], "receipts acknowledged", "receipt-to-ack latency")
    figure.suptitle(results["title"], fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _lines(axes: Any, rows: list[dict[str, Any]], rate: str, label: str) -> None:
    """The p99 and p50 of `rows` against their `rate` (in thousands), in one colour."""
    if not rows:
        return
    rows = sorted(rows, key=lambda row: row[rate])
    rates = [row[rate] / 1000 for row in rows]
    (line,) = axes.plot(rates, [row["p99_ms"] for row in rows], marker="o", label=f"{label}, p99")
    axes.plot(
        rates,
        [row["p50_ms"] for row in rows],
        marker=".",
        linestyle="--",
        color=line.get_color(),
        label=f"{label}, p50",
    )


def _finish(axes: Any, counted: str, timed: str) -> None:
    axes.axhline(100, color="grey", linewidth=0.8, linestyle=":")
    axes.set_yscale("log")
    axes.set_xlabel(f"{counted} per second (thousands), server on one core")
    axes.set_ylabel(f"{timed} (ms, log scale)")
    axes.grid(True, which="both", alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8)


def _show(name: str, row: dict[str, Any]) -> None:
    print(name, " ".join(f"{key}={value}" for key, value in row.items()), flush=True)


def _rates(text: str) -> list[float]:
    return [float(rate) for rate in text.split(",")]


def _positive(kind: Callable[[str], float], name: str) -> Callable[[str], float]:
    """An argparse type: one finite number above zero; `name` is what its error calls it."""

    def parse(text: str) -> float:
        value = kind(text)
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(text)
        return value

    parse.__name__ = name
    return parse


def _list_of(
    item: Callable[[str], float], name: str, words: tuple[str, ...] = ()
) -> Callable[[str], str]:
    """An argparse type: comma-separated `item`s (or `words`), kept as the text given."""

    def parse(text: str) -> str:
        for part in text.split(","):
            if part not in words:
                item(part)
        return text

    parse.__name__ = name
    return parse


_number = _positive(float, "positive number")
_count = _positive(int, "positive integer")
_counts_of = _list_of(_count, "comma-separated positive integers")
_rates_of = _list_of(_number, "comma-separated positive numbers")
_heartbeat_rates = _list_of(
    _number, "comma-separated positive numbers or `interval`", words=("interval",)
)


def options(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with every size not given taken from the full or quick profile."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench", description=" ".join(__doc__.split("\n\n")[0].split())
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"every scenario, small: about {QUICK_SECONDS} s on a 2-core machine, to try the "
        "benchmark (the full run takes several minutes); sizes below: [full; quick]",
    )
    parser.add_argument("--only", default=",".join(SCENARIOS), help="scenarios, comma-separated")
    parser.add_argument("--server-cpu", help="pin the nodes to these CPUs (taskset)")
    sizes = (
        ("--seconds", _number, "length of each fan-out step, s"),
        ("--subscribers", _count, "for fanout, cluster and rooms"),
        ("--idle", _counts_of, "socket counts for `idle`"),
        ("--fanout-rates", _rates_of, "events/s per step"),
        ("--cluster-rates", _rates_of, "events/s per step"),
        ("--latency-rates", _rates_of, "events/s per step"),
        ("--rooms-rates", _rates_of, "events/s per step"),
        ("--heartbeat-devices", _count, "device sockets for `heartbeats`"),
        ("--heartbeat-rates", _heartbeat_rates, "heartbeats/s per step"),
        ("--heartbeat-seconds", _number, "length of each heartbeat step, s"),
        ("--state-devices", _count, "device sockets for `state`"),
        ("--state-rooms", _count, "rooms with state for `state`, half locations, half groups"),
        ("--state-waves", _count, "connects of every device for `state`, the first included"),
        ("--receipt-devices", _count, "device sockets for `receipts`"),
        ("--receipt-rates", _rates_of, "commands/s per step, each answered by every device"),
        ("--receipt-seconds", _number, "length of each receipts step, s"),
        ("--shard-tenants", _count, "tenants publishing at once for `shards`"),
        ("--shard-devices", _count, "devices per tenant for `shards`"),
    )
    for flag, kind, meaning in sizes:
        key = flag[2:].replace("-", "_")
        parser.add_argument(flag, type=kind, help=f"{meaning} [{FULL[key]}; {QUICK[key]}]")
    parser.add_argument("--out", default="results/bench.json")
    parser.add_argument("--chart", default="results/bench.png")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    chosen = args.only.split(",")
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if "rooms" in chosen and args.subscribers % ROOMS:
        parser.error(f"--subscribers must be a multiple of {ROOMS} for `rooms`")
    if "state" in chosen and args.state_rooms < 2:
        parser.error("--state-rooms must be at least 2 for `state`: locations and groups")
    return args


def main() -> None:
    args = options()
    chosen = args.only.split(",")
    raise_file_limit()
    redis_server, redis_url = start_redis()
    cpu, subscribers = args.server_cpu, args.subscribers
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
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
            Setup(
                subscribers=LATENCY_SUBSCRIBERS,
                nodes=2,
                redis_url=redis_url,
                server_cpu=cpu,
                sample=1,
            ),
            _rates(args.latency_rates),
            args.seconds,
        ),
        "rooms": lambda: fan_out(
            "rooms",
            Setup(subscribers=subscribers, rooms=ROOMS, server_cpu=cpu),
            _rates(args.rooms_rates),
            args.seconds,
        ),
        "heartbeats": lambda: heartbeats(
            cpu,
            redis_url,
            args.heartbeat_devices,
            args.heartbeat_rates,
            args.heartbeat_seconds,
            out.with_name(f"{out.stem}-heartbeats.json"),
        ),
        "state": lambda: _shown(
            "state",
            state.run(args.state_devices, args.state_rooms, args.state_waves, redis_url, cpu),
        ),
        "shards": lambda: _shown(
            "shards", shards.run(args.shard_tenants, args.shard_devices, args.seconds, cpu)
        ),
        "receipts": lambda: _shown(
            "receipts",
            receipts.run(
                args.receipt_devices,
                _rates(args.receipt_rates),
                args.receipt_seconds,
                redis_url,
                cpu,
            ),
        ),
    }
    results: dict[str, Any] = {"args": vars(args), "title": title(vars(args))}
    started = time.monotonic()
    try:
        for name in chosen:
            results[name] = runs[name]()
    finally:
        redis_server.kill()
        redis_server.wait()
    results["seconds_taken"] = round(time.monotonic() - started)
    out.write_text(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    chart(results, Path(args.chart))
    print(f"wrote {out} and {args.chart} in {results['seconds_taken']} s")


if __name__ == "__main__":
    main()
