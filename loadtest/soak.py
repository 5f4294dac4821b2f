"""Soak: two nodes through Redis for an hour or more under a fleet that lives as a real one
does, and whether the nodes and the Redis stay flat.

Thousands of devices beat and answer commands with receipts; a tenth of them a minute close
and come back, resuming every room with `since`/`epoch`; dashboards watch `status`; an
operator broadcasts over REST, every event numbered per room so that each device's missed
events are counted; every few minutes node `b` is stopped with SIGTERM (its clients move to
`a`) and started again (they move back). Each node's memory, descriptors and tasks and the
Redis's keys and memory are sampled throughout; the verdict holds them flat in the second
half, and no resuming device may have missed an event.

    .venv/bin/python -m loadtest.soak --devices 2000 --minutes 60 --out /tmp/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis.asyncio as aioredis

from hub.auth import Role, issue_token
from loadtest import soakfigures
from loadtest.processes import SECRET, free_port, raise_file_limit, start_node, start_redis
from loadtest.soakfleet import Dashboard, Device, Fleet, Tally, Targets, Track

TENANT = "bench"
STATS_KEY = "soak-stats-key-that-reads-the-metrics"
LOCATIONS = ("lobby", "cafe", "entrance", "checkout")
GROUPS = ("portrait", "landscape", "menu")
STEADY, RESTARTED = 0, 1
"""Node `a` runs the whole soak; node `b` is the one restarted."""
CONNECTING = 100
"""Sockets opened at once while the fleet first connects."""
ATTEMPTS = 10
"""Tries of one broadcast (same Idempotency-Key, so it is published once) before the soak
gives up: a node may be restarting, never both."""
RETRY_PAUSE = 0.5
STOP_GRACE = 60.0
"""Seconds a SIGTERM'd node may take to drain and exit before it is killed."""
SETTLE_LIMIT = 90.0
"""Seconds the fleet may take at the end to be back home and resumed."""
QUIET = 3.0
"""Seconds left for the last events to arrive before the devices are checked."""
KINDS = (
    ("location", "content.update", 5),
    ("group", "playlist.update", 3),
    ("devices", "alert", 2),
)
"""What the operator broadcasts besides commands: kind of room, event, weight."""


@dataclass(slots=True)
class Node:
    """One `hub serve` process the soak can stop with SIGTERM and start again."""

    name: str
    port: int
    settings: dict[str, str]
    redis_url: str
    cpu: str | None
    process: Any = None

    async def start(self) -> None:
        self.process = await asyncio.to_thread(
            start_node, self.name, self.port, self.redis_url, self.cpu, **self.settings
        )

    async def restart(self) -> int:
        """SIGTERM (the node drains), then start it again; the drained process's status."""
        code = await self.stop(signal.SIGTERM)
        await self.start()
        return code

    async def stop(self, how: signal.Signals) -> int:
        self.process.send_signal(how)
        try:
            code: int = await asyncio.to_thread(self.process.wait, STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = await asyncio.to_thread(self.process.wait)
        return code


@dataclass(slots=True)
class Operator:
    """Broadcasts over REST, each event's data numbered per room (`seq`, from 1)."""

    targets: Targets
    token: str
    published: Counter[str] = field(default_factory=Counter)
    commands: int = 0
    retries: Counter[str] = field(default_factory=Counter)

    async def run(self, stop: asyncio.Event, rate: float, command_every: float) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            last_command = time.monotonic()
            for n in itertools.count():
                if stop.is_set():
                    return
                if time.monotonic() - last_command >= command_every:
                    last_command = time.monotonic()
                    room = f"location:{random.choice(LOCATIONS)}"
                    await self.broadcast(http, n, room, "command", {"name": "reload"})
                    self.commands += 1
                else:
                    await self.broadcast(http, n, *_pick())
                await asyncio.sleep(1 / rate)

    async def broadcast(
        self, http: httpx.AsyncClient, n: int, room: str, event: str, data: dict[str, Any]
    ) -> None:
        """Publish once, whichever node answers: retried with the same Idempotency-Key."""
        seq = self.published[room] + 1
        body = {"room": room, "event": event, "data": {**data, "seq": seq}}
        headers = {"Authorization": f"Bearer {self.token}", "Idempotency-Key": f"{room}-{seq}"}
        for attempt in range(ATTEMPTS):
            port = self.targets.pick((n + attempt) % len(self.targets.ports))
            try:
                answer = await http.post(
                    f"http://127.0.0.1:{port}/v1/broadcast", json=body, headers=headers
                )
                if answer.status_code == 202:
                    self.published[room] = seq
                    return
                self.retries[f"HTTP {answer.status_code}"] += 1
            except httpx.HTTPError as error:
                self.retries[type(error).__name__] += 1
            await asyncio.sleep(RETRY_PAUSE)
        raise RuntimeError(f"broadcast {room} {seq} failed {ATTEMPTS} times: {self.retries}")


def _pick() -> tuple[str, str, dict[str, Any]]:
    """A room and a typed event for it: mostly state events, as a real back office sends."""
    kind, event, _ = random.choices(KINDS, weights=[k[2] for k in KINDS])[0]
    if kind == "location":
        return f"location:{random.choice(LOCATIONS)}", event, {"content_id": "c", "version": 1}
    if kind == "group":
        return f"group:{random.choice(GROUPS)}", event, {"playlist_id": "p", "items": ["a"]}
    return "devices", event, {"level": "info", "message": "soak"}


def token_ttl(args: argparse.Namespace) -> float:
    """Longer than the soak: no socket is closed for an expired token."""
    return float(args.minutes) * 60 + 3600


def fleet_of(args: argparse.Namespace, targets: Targets, tally: Tally) -> Fleet:
    """The devices (each in a location, a group and `devices`) and the dashboards, each
    with its own node: half on `a`, half on `b`."""
    ttl = token_ttl(args)
    devices = []
    for i in range(args.devices):
        loc, group = LOCATIONS[i % len(LOCATIONS)], GROUPS[i % len(GROUPS)]
        extra = {"loc": loc, "groups": [group]}
        sub = f"soak-{i}"
        token = issue_token(SECRET, sub=sub, role=Role.DEVICE, tenant=TENANT, ttl=ttl, extra=extra)
        device = Device(sub, token, i % 2, f"127.0.0.{2 + i % 200}", tally)
        device.tracks = {room: Track() for room in ("devices", f"location:{loc}", f"group:{group}")}
        devices.append(device)
    dashboards = [
        Dashboard(
            f"dash-{i}",
            issue_token(SECRET, sub=f"dash-{i}", role=Role.DASHBOARD, tenant=TENANT, ttl=ttl),
            i % 2,
            "127.0.0.1",
            tally,
        )
        for i in range(args.dashboards)
    ]
    return Fleet(targets, devices, dashboards)


class Soak:
    """The run: nodes, fleet, operator, restarts, samples."""

    def __init__(self, args: argparse.Namespace, nodes: list[Node], redis: aioredis.Redis):
        self.args, self.nodes, self.redis = args, nodes, redis
        self.targets = Targets([node.port for node in nodes], [True] * len(nodes))
        self.tally = Tally()
        self.fleet = fleet_of(args, self.targets, self.tally)
        token = issue_token(
            SECRET, sub="soak-operator", role=Role.OPERATOR, tenant=TENANT, ttl=token_ttl(args)
        )
        self.operator = Operator(self.targets, token)
        self.phase = "settled"
        self.restarts: Counter[int] = Counter()
        self.samples: list[dict[str, Any]] = []
        self.stop = asyncio.Event()
        self.started = time.monotonic()
        self.broken: list[str] = []
        """Why the operator or the restarts stopped before the end, if they did."""

    async def run(self) -> dict[str, Any]:
        await _limited(self.fleet.connect(client) for client in self.fleet.clients)
        seconds = self.args.minutes * 60
        print(soakfigures.header(), flush=True)
        self.started = time.monotonic()
        beats, cycles, samples = (
            asyncio.create_task(work) for work in (self._beat(), self._cycle(), self._sample())
        )
        workers = [
            asyncio.create_task(
                self.operator.run(self.stop, self.args.rate, self.args.command_every)
            ),
            asyncio.create_task(self._restart()),
        ]
        await asyncio.wait(workers, timeout=seconds, return_when="FIRST_EXCEPTION")
        self.stop.set()
        ended = await asyncio.gather(*workers, return_exceptions=True)
        self.broken = [repr(error) for error in ended if isinstance(error, BaseException)]
        cycles.cancel()
        await self._settle()
        missed_at_end = sum(d.missing(self.operator.published) for d in self.fleet.devices)
        self.samples.append(await self._figures())
        print(soakfigures.line(self.samples[-1]), flush=True)
        beats.cancel()
        samples.cancel()
        return self._report(seconds, missed_at_end)

    async def _beat(self) -> None:
        for tick in itertools.count():
            interval = self.args.heartbeat or self._welcome_interval()
            self.fleet.beat(tick, max(1, round(interval)))
            await asyncio.sleep(1)

    def _welcome_interval(self) -> float:
        return next((d.interval for d in self.fleet.devices if d.interval), 15.0)

    async def _cycle(self) -> None:
        """A tenth of the devices a minute (by default) close and come back, in turn."""
        pace = 60 / max(1.0, len(self.fleet.devices) * self.args.reconnect_share)
        order = list(self.fleet.devices)
        random.shuffle(order)
        for device in itertools.cycle(order):
            self.fleet.spawn(self.fleet.cycle(device, self.args.offline))
            await asyncio.sleep(pace)

    async def _restart(self) -> None:
        """Every `--restart-every` s: SIGTERM node `b`, start it again, bring its clients
        back; until the soak ends."""
        while not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), self.args.restart_every)
                return
            except TimeoutError:
                pass
            self.phase = "restarting"
            self.targets.ready[RESTARTED] = False
            self.restarts[await self.nodes[RESTARTED].restart()] += 1
            self.targets.ready[RESTARTED] = True
            self.phase = "returning"
            await self._return_home()
            self.phase = "settled"

    async def _return_home(self) -> None:
        """Move every client connected away from its own node back, spread over
        `--return-seconds`; again for those that were busy meanwhile."""
        for _ in range(3):
            away = [c for c in self.fleet.clients if c.port != self.targets.ports[c.home]]
            if not away:
                return
            spread = self.args.return_seconds
            await asyncio.gather(
                *(_later(random.uniform(0, spread), self.fleet.home(c)) for c in away)
            )
            await asyncio.sleep(1)

    async def _settle(self) -> None:
        """At the end: every client home and every room resumed, then a moment of quiet."""
        await self._return_home()
        deadline = time.monotonic() + SETTLE_LIMIT
        while self.fleet.displaced() or self.fleet.resuming():
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(QUIET)

    async def _sample(self) -> None:
        while True:
            sample = await self._figures()
            self.samples.append(sample)
            print(soakfigures.line(sample), flush=True)
            await asyncio.sleep(self.args.sample)

    async def _figures(self) -> dict[str, Any]:
        sample: dict[str, Any] = {"t": round(time.monotonic() - self.started), "phase": self.phase}
        async with httpx.AsyncClient(timeout=10) as http:
            for label, node, ready in zip("ab", self.nodes, self.targets.ready, strict=True):
                watched = soakfigures.Watched(label, node.port, node.process.pid if ready else None)
                sample |= await soakfigures.node_figures(watched, http, STATS_KEY)
        sample |= await soakfigures.redis_figures(self.redis)
        if self.phase != sample["phase"]:
            sample["phase"] = "changing"  # a restart began or ended while it was taken
        return sample | {"events": self.tally.events, "missed": self.tally.missed}

    def _report(self, seconds: float, missed_at_end: int) -> dict[str, Any]:
        tally = self.tally
        judged = soakfigures.levels(self.samples, seconds, self.args.bound)
        counts = {
            "restarts": sum(self.restarts.values()),
            "restart_exit_codes": {str(k): v for k, v in self.restarts.items()},
            "broadcasts": sum(self.operator.published.values()),
            "commands": self.operator.commands,
            "broadcast_retries": dict(self.operator.retries),
            "events": tally.events,
            "caught_up": tally.caught_up,
            "duplicates": tally.duplicates,
            "missed": tally.missed,
            "missed_at_end": missed_at_end,
            "gaps": tally.gaps,
            "resumes": tally.resumes,
            "unrecovered": tally.unrecovered,
            "reconnects": tally.reconnects,
            "connects": tally.connects,
            "connect_failures": tally.connect_failures,
            "receipts_sent": tally.receipts_sent,
            "receipts_acked": tally.receipts_acked,
            "receipts_unanswered": tally.receipts_unanswered
            + sum(len(device.awaiting) for device in self.fleet.devices),
            "device_commands": tally.commands,
            "errors": dict(tally.errors),
            "closes": {str(k): v for k, v in tally.closes.items()},
            "status_events": dict(tally.status),
        }
        failures = self.broken + soakfigures.verdict(judged, tally.missed)
        report = {"args": vars(self.args), **counts, "levels": judged, "failures": failures}
        return report | {"samples": self.samples}


async def _later(delay: float, work: Awaitable[None]) -> None:
    await asyncio.sleep(delay)
    await work


async def _limited(works: Any) -> None:
    """Run `works` with at most `CONNECTING` at once."""
    gate = asyncio.Semaphore(CONNECTING)

    async def one(work: Awaitable[None]) -> None:
        async with gate:
            await work

    await asyncio.gather(*(one(work) for work in works))


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    """Start the Redis and the two nodes, run the soak, stop them."""
    redis_process, url = start_redis()
    settings = {
        "stats_key": STATS_KEY,
        "drain_seconds": str(args.drain),
        "history_ttl": str(args.history_ttl),
        "idempotency_ttl": str(args.history_ttl),
    }
    nodes = [Node(f"soak-{label}", free_port(), settings, url, args.server_cpu) for label in "ab"]
    client = aioredis.Redis.from_url(url)
    try:
        for node in nodes:
            await node.start()
        return await Soak(args, nodes, client).run()
    finally:
        await client.aclose()
        for node in nodes:
            if node.process is not None and node.process.poll() is None:
                await node.stop(signal.SIGINT)
        redis_process.kill()
        redis_process.wait()


def print_report(report: dict[str, Any]) -> None:
    """The levels of each figure, the counts, and the verdict."""
    judged = report["levels"]
    print(f"\nsettled samples in the second half: {judged['settled_samples']}")
    print(f"{'figure':>12} {'1st half':>10} {'2nd start':>10} {'2nd end':>10} {'growth':>8}")
    for name, figure in judged["figures"].items():
        growth = "-" if figure["growth"] is None else f"{figure['growth']:+.1%}"
        cells = [figure[k] for k in ("first_half", "second_start", "second_end")]
        judged_mark = "" if figure["flat"] is None else ("flat" if figure["flat"] else "GREW")
        print(
            f"{name:>12} "
            + " ".join(f"{soakfigures.cell(c):>10}" for c in cells)
            + f" {growth:>8} {judged_mark}"
        )
    skipped = ("args", "levels", "failures", "samples")
    for key, value in report.items():
        if key not in skipped:
            print(f"{key}: {value}")
    verdict = "PASS" if not report["failures"] else "FAIL: " + "; ".join(report["failures"])
    print(f"verdict (growth bound {judged['bound']:.0%} in the second half): {verdict}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--devices", type=int, default=2000)
    add("--dashboards", type=int, default=2, help="sockets subscribed to status")
    add("--minutes", type=float, default=60.0, help="length of the soak")
    add("--restart-every", type=float, default=300.0, help="s between restarts of node b")
    add("--reconnect-share", type=float, default=0.1, help="devices that reconnect a minute")
    add("--offline", type=float, default=2.0, help="most s a reconnecting device stays away")
    add("--heartbeat", type=float, help="s between heartbeats (default: the welcome's)")
    add("--rate", type=float, default=1.0, help="REST broadcasts a second")
    add("--command-every", type=float, default=30.0, help="s between commands")
    add("--sample", type=float, default=30.0, help="s between samples")
    add("--bound", type=float, default=0.05, help="growth allowed in the second half (ratio)")
    add("--drain", type=float, default=5.0, help="HUB_DRAIN_SECONDS of the nodes")
    add("--history-ttl", type=float, default=600.0, help="HUB_HISTORY_TTL of the nodes, s")
    add("--return-seconds", type=float, default=10.0, help="s to bring clients back to b")
    add("--server-cpu", help="pin the nodes to these CPUs (taskset)")
    add("--out", help="write the samples and the report here (.json, or .csv: samples)")
    args = parser.parse_args()
    raise_file_limit()
    report = asyncio.run(soak(args))
    print_report(report)
    if args.out:
        soakfigures.write(args.out, report)
    sys.exit(1 if report["failures"] else 0)


if __name__ == "__main__":
    main()
