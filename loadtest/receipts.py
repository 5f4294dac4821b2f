"""Delivery-receipt benchmark: receipts acknowledged per second, their ack latency, errors.

Starts its own node (and, given a Redis, two nodes through it), opens N device sockets
spread over client processes, and publishes a `command` to `devices` at each requested
rate for a fixed time. Every device answers every command with a `done` receipt the moment
it reads it and times the receipt's ack; every `error` answer is counted by its code.

    python -m loadtest.receipts --devices 2000 --rate 1,2,5,10 --seconds 5 --redis-url ...
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import orjson

from hub.auth import Role, issue_token
from loadtest.fanout import publisher
from loadtest.processes import SECRET, raise_file_limit
from loadtest.rig import (
    SILENT,
    Clients,
    Nodes,
    connect_timeout,
    latency,
    per_cpu_second,
    write_rows,
)
from loadtest.wire import TEXT, RawSocket, frame, open_many

RECEIPT_RATE = "1000"
"""Receipts per second one device may send (HUB_RECEIPT_RATE, 10 by default): a step may
ask more of each device than a fleet would, and what is measured is the node, not the
limit."""
QUIET = 2.0
"""A step's answers are all in once none came for this long."""


@dataclass(slots=True)
class _Tally:
    """What the devices of one process saw since the last report."""

    sent: int = 0
    acked: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    pending: dict[int, float] = field(default_factory=dict)
    """Receipts awaiting their answer: ref to when it was sent."""
    refs: Iterator[int] = field(default_factory=itertools.count)

    def report(self, closed: int) -> _Report:
        """The counts since the last report, which start again from zero."""
        report = _Report(self.sent, self.acked, dict(self.errors), self.latencies, closed)
        self.sent = self.acked = 0
        self.errors, self.latencies = Counter(), []
        return report


@dataclass(frozen=True, slots=True)
class _Report:
    sent: int
    acked: int
    errors: dict[str, int]
    latencies: list[float]
    closed: int
    """Sockets the node closed since the start."""


class _Device(RawSocket):
    """Answers each `command` with a `done` receipt; times its ack, counts its error."""

    def __init__(self, tally: _Tally) -> None:
        super().__init__()
        self.tally = tally

    def text(self, buffer: bytearray, start: int, end: int) -> None:
        message = orjson.loads(bytes(buffer[start:end]))
        kind, tally = message.get("type"), self.tally
        if kind == "event" and message.get("event") == "command":
            ref = next(tally.refs)
            receipt = {"op": "receipt", "room": message["room"], "id": message["id"]}
            payload = orjson.dumps({**receipt, "status": "done", "ref": ref})
            tally.pending[ref] = time.monotonic()
            self.transport.write(frame(TEXT, payload))
            tally.sent += 1
        elif kind == "ack":
            sent = tally.pending.pop(message.get("ref"), None)
            if sent is not None:
                tally.acked += 1
                tally.latencies.append((time.monotonic() - sent) * 1000)
        elif kind == "error":
            tally.pending.pop(message.get("ref"), None)
            tally.errors[message.get("code", "unknown")] += 1


def _devices(first: int, count: int, ports: list[int], pipe: Connection) -> None:
    """One client process: connect its devices, then answer each message with a report."""
    raise_file_limit()

    def token_of(i: int) -> str:
        return issue_token(SECRET, sub=f"rcpt-{i}", role=Role.DEVICE, tenant="bench", ttl=7200)

    async def main() -> None:
        tally = _Tally()
        numbers = range(first, first + count)
        sockets = await open_many(
            lambda: _Device(tally), ports, numbers, token_of, connect_timeout(count)
        )
        loop = asyncio.get_running_loop()
        pipe.send("ready")
        while True:
            await loop.run_in_executor(None, pipe.recv)
            pipe.send(tally.report(sum(device.closed for device in sockets)))

    asyncio.run(main())


async def _command(port: int, rate: float, seconds: float) -> int:
    """Publish `command` to `devices` at `rate` for `seconds`; every one must be accepted."""
    total = round(rate * seconds)
    async with publisher(port, "receipts-commander", ["devices"]) as ws:
        start = time.monotonic()
        for n in range(total):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            command = {"op": "publish", "room": "devices", "event": "command", "ref": n}
            await ws.send(orjson.dumps({**command, "data": {"name": "reload"}}).decode())
        for _ in range(total):
            answer = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
            if answer.get("type") != "ack":
                raise RuntimeError(f"a command was refused: {answer}")
    return total


def _step(
    nodes: Nodes, clients: Clients, devices: int, rate: float, seconds: float
) -> dict[str, Any]:
    """Command at `rate` for `seconds` through the last node; gather the answers until all
    came or none came for `QUIET` seconds."""
    before, started = nodes.cpu_seconds(), time.monotonic()
    commands = asyncio.run(_command(nodes.ports[-1], rate, seconds))
    sending_cpu, sending = nodes.cpu_seconds() - before, time.monotonic() - started
    expected = commands * devices
    reports: list[_Report] = []
    quiet_since = time.monotonic()
    while True:
        time.sleep(0.2)
        fresh: list[_Report] = clients.ask("report", 30)
        reports += fresh
        answered = sum(r.acked + sum(r.errors.values()) for r in reports)
        if any(report.acked or report.errors for report in fresh):
            quiet_since = time.monotonic()
        if answered >= expected or time.monotonic() - quiet_since >= QUIET:
            break
    cpu = nodes.cpu_seconds() - before
    acked = sum(report.acked for report in reports)
    errors: Counter[str] = Counter()
    for report in reports:
        errors.update(report.errors)
    return {
        "setup": nodes.setup,
        "rate": rate,
        "commands": commands,
        "offered_per_s": round(rate * devices),
        "expected": expected,
        "sent": sum(report.sent for report in reports),
        "acked": acked,
        "acked_per_s": round(acked / seconds),
        **latency(list(itertools.chain.from_iterable(r.latencies for r in reports))),
        "errors": sum(errors.values()),
        "error_codes": dict(errors),
        "missing": expected - answered,
        "node_cpu_pct": round(100 * sending_cpu / sending, 1),
        "acked_per_cpu_s": per_cpu_second(acked, cpu),
        "closed": sum(report.closed for report in fresh),
    }


def run(
    devices: int, rates: list[float], seconds: float, redis_url: str | None, cpu: str | None
) -> Iterator[dict[str, Any]]:
    """One row per rate: on one node, then, given `redis_url`, on two nodes through it."""
    for redis in [None] if redis_url is None else [None, redis_url]:
        with Nodes("receipts", redis, cpu, {"receipt_rate": RECEIPT_RATE, **SILENT}) as nodes:
            timeout = connect_timeout(devices) + 30
            with Clients(_devices, devices, nodes.ports, timeout=timeout) as clients:
                for rate in rates:
                    nodes.settle()
                    yield _step(nodes, clients, devices, rate, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--rate", default="1,2,5,10", help="commands/s per step, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each step")
    parser.add_argument("--redis-url", help="also run two nodes through this Redis")
    parser.add_argument("--server-cpu", help="pin the nodes to these CPUs (taskset)")
    parser.add_argument("--out", default="results/receipts.json")
    args = parser.parse_args()
    raise_file_limit()
    rates = [float(rate) for rate in args.rate.split(",")]
    write_rows(
        run(args.devices, rates, args.seconds, args.redis_url, args.server_cpu), args, args.out
    )


if __name__ == "__main__":
    main()
