"""Reconnect-storm benchmark: welcomes with state per second, and time from connect to welcome.

Starts its own node (and, given a Redis, two nodes through it), gives each of many rooms a
`content.update` and a `playlist.update`, then has every device (one location and one group
that have state) connect at once, close, and reconnect, wave after wave. Each welcome's
`state` is compared with what was published; one that differs is a mismatch in the row.

    python -m loadtest.state --devices 2000 --rooms 2000 --waves 3 --redis-url redis://...
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import orjson

from hub.auth import Role, issue_token
from hub.history import parse_id
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
from loadtest.wire import TEXT, RawSocket, open_socket

State = dict[str, list[tuple[str, str]]]
"""Each room's state events as (event, id), ordered by id."""
WINDOW = 200
"""State events published at once while seeding, before their acks are read."""


def rooms_of(device: int, rooms: int) -> tuple[str, str]:
    """The `loc` and the group of `device`: half the rooms with state are locations, the
    other half groups, and the devices go round each half in turn."""
    locations = rooms // 2
    return f"s{device % locations}", f"s{device % (rooms - locations)}"


def stateful_rooms(rooms: int) -> list[str]:
    """The rooms that get state: the locations, then the groups, that `rooms_of` hands out."""
    locations = rooms // 2
    return [
        *(f"location:s{n}" for n in range(locations)),
        *(f"group:s{n}" for n in range(rooms - locations)),
    ]


def state_of(welcome: bytes) -> State:
    """A welcome's `state`, as (event, id) in the order given; missing fields are empty, so
    that a malformed welcome is a mismatch rather than a crash."""
    rooms = orjson.loads(welcome).get("state") or {}
    return {
        room: [(event.get("event", ""), event.get("id", "")) for event in events]
        for room, events in rooms.items()
    }


async def seed(port: int, rooms: list[str]) -> State:
    """Publish a content.update and a playlist.update to every room, `WINDOW` at a time;
    the state each room must now have."""
    events = [
        (room, event, data)
        for room in rooms
        for event, data in (
            ("content.update", {"content_id": f"c-{room}", "version": 1}),
            ("playlist.update", {"playlist_id": f"p-{room}", "items": ["intro", "menu"]}),
        )
    ]
    published: State = {room: [] for room in rooms}
    async with publisher(port, "state-seeder", ["location:*", "group:*"]) as ws:
        for low in range(0, len(events), WINDOW):
            window = events[low : low + WINDOW]
            for ref, (room, event, data) in enumerate(window, low):
                publish = {"op": "publish", "room": room, "event": event, "data": data}
                await ws.send(orjson.dumps({**publish, "ref": ref}).decode())
            for _ in window:
                answer = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
                if answer.get("type") != "ack":
                    raise RuntimeError(f"a state event was refused: {answer}")
                room, event, _ = events[answer["ref"]]
                published[room].append((event, answer["id"]))
    return {
        room: sorted(kept, key=lambda pair: parse_id(pair[1]) or (0, 0))
        for room, kept in published.items()
    }


class _Device(RawSocket):
    """A device socket that times its welcome from `started` and checks the state in it."""

    def __init__(self, expected: State, started: float) -> None:
        super().__init__()
        self.expected = expected
        self.started = started
        self.welcomed = 0.0
        self.matches = False
        self.gone = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.gone.set_result(None)

    def _frame(self, opcode: int, buffer: bytearray, start: int, end: int) -> None:
        if opcode == TEXT and not self.ready.done():
            self.welcomed = time.monotonic()
            self.matches = state_of(bytes(buffer[start:end])) == self.expected
        super()._frame(opcode, buffer, start, end)


@dataclass(frozen=True, slots=True)
class _Wave:
    """One client process's share of a wave."""

    first: float
    """When its first connect began (time.monotonic: one clock for every process)."""
    last: float
    """When its last welcome came, or `first` when none did."""
    latencies: list[float]
    mismatches: int
    failed: int


async def _wave(ports: list[int], tokens: dict[int, str], expected: dict[int, State]) -> _Wave:
    """Connect every device at once, from 200 loopback source addresses in turn; once every
    one is welcomed (or failed), close them all."""
    sockets = []
    failed = 0
    first = time.monotonic()
    for i, token in tokens.items():
        device = functools.partial(_Device, expected[i], time.monotonic())
        try:
            sockets.append(
                await open_socket(device, ports[i % len(ports)], token, f"127.0.0.{2 + i % 200}")
            )
        except OSError:
            failed += 1
    if sockets:
        await asyncio.wait([s.ready for s in sockets], timeout=connect_timeout(len(tokens)))
        for s in sockets:
            s.transport.close()
        await asyncio.wait([s.gone for s in sockets])
    # Read once all are closed: every socket's `ready` is then settled, failures included.
    welcomed = [s for s in sockets if s.ready.done() and s.ready.exception() is None]
    return _Wave(
        first=first,
        last=max((s.welcomed for s in welcomed), default=first),
        latencies=[(s.welcomed - s.started) * 1000 for s in welcomed],
        mismatches=sum(not s.matches for s in welcomed),
        failed=failed + len(sockets) - len(welcomed),
    )


def _devices(
    first: int, count: int, ports: list[int], rooms: int, state: State, pipe: Connection
) -> None:
    """One client process: its devices' tokens and expected state, then a wave per message."""
    raise_file_limit()
    tokens, expected = {}, {}
    for i in range(first, first + count):
        loc, group = rooms_of(i, rooms)
        extra = {"loc": loc, "groups": [group]}
        tokens[i] = issue_token(
            SECRET, sub=f"state-{i}", role=Role.DEVICE, tenant="bench", ttl=7200, extra=extra
        )
        expected[i] = {
            f"location:{loc}": state[f"location:{loc}"],
            f"group:{group}": state[f"group:{group}"],
        }

    async def main() -> None:
        loop = asyncio.get_running_loop()
        pipe.send("ready")
        while True:
            await loop.run_in_executor(None, pipe.recv)
            pipe.send(await _wave(ports, tokens, expected))

    asyncio.run(main())


def run(
    devices: int, rooms: int, waves: int, redis_url: str | None, cpu: str | None
) -> Iterator[dict[str, Any]]:
    """One row per wave: on one node, then, given `redis_url`, on two nodes through it."""
    for redis in [None] if redis_url is None else [None, redis_url]:
        with Nodes("state", redis, cpu, SILENT) as nodes:
            state = asyncio.run(seed(nodes.ports[0], stateful_rooms(rooms)))
            timeout = connect_timeout(devices) + 30
            with Clients(_devices, devices, nodes.ports, rooms, state, timeout=timeout) as clients:
                for wave in range(1, waves + 1):
                    nodes.settle()
                    before = nodes.cpu_seconds()
                    answers = clients.ask("wave", timeout)
                    yield _row(nodes.setup, wave, devices, answers, nodes.cpu_seconds() - before)


def _row(setup: str, wave: int, devices: int, answers: list[_Wave], cpu: float) -> dict[str, Any]:
    latencies = list(itertools.chain.from_iterable(answer.latencies for answer in answers))
    span = max(answer.last for answer in answers) - min(answer.first for answer in answers)
    welcomes = len(latencies)
    return {
        "setup": setup,
        "wave": wave,
        "devices": devices,
        "welcomes": welcomes,
        "welcomes_per_s": round(welcomes / span) if span > 0 else 0,
        **latency(latencies),
        "mismatches": sum(answer.mismatches for answer in answers),
        "failed": sum(answer.failed for answer in answers),
        "node_cpu_s": round(cpu, 2),
        "welcomes_per_cpu_s": per_cpu_second(welcomes, cpu),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--rooms", type=int, default=2000, help="rooms with state, at least 2")
    parser.add_argument("--waves", type=int, default=3, help="the first connect, then reconnects")
    parser.add_argument("--redis-url", help="also run two nodes through this Redis")
    parser.add_argument("--server-cpu", help="pin the nodes to these CPUs (taskset)")
    parser.add_argument("--out", default="results/state.json")
    args = parser.parse_args()
    if args.rooms < 2:
        parser.error("--rooms must be at least 2: locations and groups")
    raise_file_limit()
    rows = run(args.devices, args.rooms, args.waves, args.redis_url, args.server_cpu)
    write_rows(rows, args, args.out)


if __name__ == "__main__":
    main()
