"""The soak's clients, all in one asyncio process on raw sockets: devices that beat, answer
every command with `received` and `done` receipts and, after every reconnect, resume each of
their rooms with `since`/`epoch`, checking the per-room sequence number the operator puts
in every broadcast, so that a missed event is counted, not guessed; and dashboards that
watch the tenant's `status` room."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from hub.history import parse_id
from loadtest.wire import MASK, TEXT, RawSocket, open_socket

CLOSE = 0x8
NORMAL_CLOSE = (1000).to_bytes(2, "big")
CONNECT_TIMEOUT = 20.0
"""Seconds from connecting to the welcome before the attempt counts as failed."""
MAX_BACKOFF = 5.0
"""Longest pause between two failed connects of one client."""
DROP_JITTER = 1.0
"""A client the node closed reconnects within this many seconds, like a real player."""
GAPS_KEPT = 20
"""Missed events described one by one in the report; the rest are only counted."""
HEARTBEAT = b'{"op":"heartbeat","data":{"status":"ok","content":"soak"}}'


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A final masked client frame of up to 64 KiB (`wire.frame` takes small ones only)."""
    size = len(payload)
    if size < 126:
        head = bytes([0x80 | opcode, 0x80 | size])
    else:
        head = bytes([0x80 | opcode, 0x80 | 126]) + size.to_bytes(2, "big")
    mask = int.from_bytes((MASK * (size // 4 + 1))[:size], "big")
    return head + MASK + (int.from_bytes(payload, "big") ^ mask).to_bytes(size, "big")


BEAT = client_frame(TEXT, HEARTBEAT)
GOODBYE = client_frame(CLOSE, NORMAL_CLOSE)


@dataclass(slots=True)
class Targets:
    """The nodes' ports, and which of them take sockets now (not draining, not down)."""

    ports: list[int]
    ready: list[bool]

    def pick(self, home: int) -> int:
        """The client's own node when it is ready, else the first ready one."""
        if self.ready[home]:
            return self.ports[home]
        for port, ready in zip(self.ports, self.ready, strict=True):
            if ready:
                return port
        return self.ports[home]


@dataclass(slots=True)
class Tally:
    """What the clients saw, the whole run."""

    events: int = 0
    """Broadcast events taken by devices, each once."""
    caught_up: int = 0
    """Of them, those held while a room resumed and handed over at its ack (replay first)."""
    duplicates: int = 0
    missed: int = 0
    gaps: list[str] = field(default_factory=list)
    resumes: int = 0
    """Subscribes with `since` answered `recovered: true`."""
    unrecovered: int = 0
    """Subscribes with `since` answered `recovered: false`: a gap the hub owned up to."""
    commands: int = 0
    receipts_sent: int = 0
    receipts_acked: int = 0
    receipts_unanswered: int = 0
    """Receipts whose socket closed (a drain) before their answer came."""
    errors: Counter[str] = field(default_factory=Counter)
    closes: Counter[int] = field(default_factory=Counter)
    """Close codes the nodes sent, by code (1012: a drain)."""
    connects: int = 0
    connect_failures: int = 0
    reconnects: int = 0
    """Closes and resumes the soak asked for (a tenth of the devices a minute)."""
    status: Counter[str] = field(default_factory=Counter)
    """Events the dashboards received in `status`, by name."""

    def gap(self, where: str, count: int) -> None:
        self.missed += count
        if len(self.gaps) < GAPS_KEPT:
            self.gaps.append(where)


@dataclass(slots=True)
class Track:
    """One room of one device: the last id taken, its epoch, the next sequence number the
    operator must have sent it (None after `recovered: false`: the next one starts again),
    and the events held while the room resumes."""

    last: tuple[int, int] = (0, 0)
    since: str | None = None
    epoch: str | None = None
    next_seq: int | None = 1
    held: list[dict[str, Any]] | None = None


class Client:
    """A device or a dashboard: its token, its own node, its current socket."""

    def __init__(self, name: str, token: str, home: int, source: str, tally: Tally) -> None:
        self.name, self.token, self.home, self.source = name, token, home, source
        self.tally = tally
        self.socket: ClientSocket | None = None
        self.port = 0
        self.tracks: dict[str, Track] = {}
        self.busy = True
        """Connecting or leaving: nothing else may move it meanwhile."""

    @property
    def connected(self) -> bool:
        return self.socket is not None and not self.socket.closed

    def send(self, data: bytes) -> None:
        socket = self.socket
        if socket is not None and socket.upgraded and not socket.transport.is_closing():
            socket.transport.write(data)

    def welcomed(self, welcome: dict[str, Any]) -> None:
        """The welcome arrived: from here on a room's events are held until its ack."""

    def take(self, message: dict[str, Any]) -> None:
        """A text frame after the welcome."""


class Device(Client):
    """A player: its rooms are joined with its welcome; it subscribes to each again, with
    `since` and `epoch` once it has seen the room, and takes events in id order, each once."""

    def __init__(self, name: str, token: str, home: int, source: str, tally: Tally) -> None:
        super().__init__(name, token, home, source, tally)
        self.refs: Iterator[int] = itertools.count()
        self.interval = 0.0
        """The heartbeat interval its last welcome gave."""
        self.awaiting: set[int] = set()
        """Refs of receipts sent on the current socket and not answered yet."""

    def welcomed(self, welcome: dict[str, Any]) -> None:
        self.interval = float(welcome.get("heartbeat", {}).get("interval", 0))
        self.tally.receipts_unanswered += len(self.awaiting)
        self.awaiting.clear()
        for room, track in self.tracks.items():
            track.held = []
            body: dict[str, Any] = {"op": "subscribe", "room": room, "ref": room}
            if track.since is not None:
                body["since"] = track.since
                if track.epoch is not None:
                    body["epoch"] = track.epoch
            self.send(client_frame(TEXT, orjson.dumps(body)))

    def take(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "event":
            track = self.tracks.get(message.get("room", ""))
            if track is None:
                return
            if track.held is not None:
                track.held.append(message)
            else:
                self._event(message["room"], track, message)
        elif kind == "ack":
            self._ack(message)
        elif kind == "error":
            self.tally.errors[str(message.get("code"))] += 1
            self.awaiting.discard(message.get("ref"))
            track = self.tracks.get(str(message.get("ref")))
            if track is not None:
                track.held = None

    def _ack(self, message: dict[str, Any]) -> None:
        ref = message.get("ref")
        if isinstance(ref, int):
            self.tally.receipts_acked += ref in self.awaiting
            self.awaiting.discard(ref)
            return
        track = self.tracks.get(ref) if isinstance(ref, str) else None
        if track is None or track.held is None:
            return
        first = track.since is None
        if not first and message.get("recovered") is True:
            self.tally.resumes += 1
        elif not first:
            self.tally.unrecovered += 1
            track.next_seq = None
        track.epoch = message.get("epoch")
        held, track.held = track.held, None
        for event in sorted(held, key=lambda e: parse_id(e["id"]) or (0, 0)):
            self.tally.caught_up += self._event(str(ref), track, event)
        if first:  # what came before the ack came after the welcome: taken, not skipped
            track.last = max(track.last, parse_id(message.get("last") or "0-0") or (0, 0))
            track.since = f"{track.last[0]}-{track.last[1]}"

    def _event(self, room: str, track: Track, message: dict[str, Any]) -> int:
        """Take one event: 1 when it is new, 0 when it is one already taken."""
        event_id = parse_id(message["id"]) or (0, 0)
        if event_id <= track.last:
            self.tally.duplicates += 1
            return 0
        track.last, track.since = event_id, message["id"]
        self.tally.events += 1
        seq = message["data"]["seq"]
        if track.next_seq is not None and seq > track.next_seq:
            where = f"{self.name} {room}: got {seq}, expected {track.next_seq}"
            self.tally.gap(where, seq - track.next_seq)
        elif track.next_seq is not None and seq < track.next_seq:
            self.tally.errors["out_of_order"] += 1
        track.next_seq = seq + 1
        if message["event"] == "command":
            self._receipts(room, message["id"])
        return 1

    def _receipts(self, room: str, event_id: str) -> None:
        self.tally.commands += 1
        for status in ("received", "done"):
            body = {"op": "receipt", "room": room, "id": event_id, "status": status}
            ref = next(self.refs)
            self.awaiting.add(ref)
            self.send(client_frame(TEXT, orjson.dumps({**body, "ref": ref})))
            self.tally.receipts_sent += 1

    def missing(self, published: dict[str, int]) -> int:
        """Events of its rooms published and never taken, at the end of the run."""
        behind = 0
        for room, track in self.tracks.items():
            if track.next_seq is not None and published.get(room, 0) >= track.next_seq:
                count = published[room] - track.next_seq + 1
                self.tally.gap(f"{self.name} {room}: ended {count} behind", count)
                behind += count
        return behind


class Dashboard(Client):
    """An operator's dashboard: subscribes to `status` at each welcome, counts its events."""

    def welcomed(self, _welcome: dict[str, Any]) -> None:
        self.send(client_frame(TEXT, b'{"op":"subscribe","room":"status","ref":"status"}'))

    def take(self, message: dict[str, Any]) -> None:
        if message.get("type") == "event":
            self.tally.status[str(message.get("event"))] += 1
        elif message.get("type") == "error":
            self.tally.errors[str(message.get("code"))] += 1


class ClientSocket(RawSocket):
    """One socket of a client: answers the node's close, tells the fleet when it is gone."""

    def __init__(self, client: Client, fleet: Fleet) -> None:
        super().__init__()
        self.client, self.fleet = client, fleet
        self.leaving = False
        """Closed on purpose (a reconnect the soak asked for): the fleet does not react."""
        self.gone = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        welcomed = self.ready.done() and not self.ready.cancelled() and not self.ready.exception()
        super().connection_lost(exc)
        self.gone.set_result(None)
        if welcomed and not self.leaving and self.client.socket is self:
            self.fleet.dropped(self.client)

    def _frame(self, opcode: int, buffer: bytearray, start: int, end: int) -> None:
        if opcode == CLOSE:
            code = int.from_bytes(buffer[start : start + 2], "big") if end - start >= 2 else 0
            self.client.tally.closes[code] += 1
            self.closed = True
            self.transport.write(client_frame(CLOSE, bytes(buffer[start : start + 2])))
            self.transport.close()
            return
        first = opcode == TEXT and not self.ready.done()
        super()._frame(opcode, buffer, start, end)
        if first and self.ready.done() and self.client.socket is self:
            self.client.welcomed(orjson.loads(bytes(buffer[start:end])))

    def text(self, buffer: bytearray, start: int, end: int) -> None:
        self.client.take(orjson.loads(bytes(buffer[start:end])))


class Fleet:
    """Every client of the soak, and what moves them: drops, asked-for reconnects, the way
    back to their own node, heartbeats."""

    def __init__(self, targets: Targets, devices: list[Device], dashboards: list[Dashboard]):
        self.targets, self.devices, self.dashboards = targets, devices, dashboards
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def clients(self) -> list[Client]:
        return [*self.devices, *self.dashboards]

    async def connect(self, client: Client) -> None:
        """Connect until welcomed, to its own node when ready; back off while it fails."""
        failures = 0
        while True:
            port = self.targets.pick(client.home)
            socket: ClientSocket | None = None
            try:
                socket = await open_socket(
                    lambda: ClientSocket(client, self), port, client.token, client.source
                )
                client.socket, client.port = socket, port
                await asyncio.wait_for(socket.ready, CONNECT_TIMEOUT)
            except (OSError, RuntimeError, TimeoutError) as error:
                client.tally.connect_failures += 1
                client.tally.errors[f"connect: {type(error).__name__}"] += 1
                if socket is not None:
                    socket.leaving = True
                    socket.transport.close()
                failures += 1
                await asyncio.sleep(random.uniform(0, min(MAX_BACKOFF, 0.1 * 2**failures)))
                continue
            client.tally.connects += 1
            client.busy = False
            return

    def dropped(self, client: Client) -> None:
        """The node closed the socket (a drain's 1012 above all): reconnect soon."""
        client.busy = True
        self.spawn(self._return(client, DROP_JITTER))

    async def cycle(self, client: Client, offline: float) -> None:
        """Close the socket as a player that loses its network does, stay away up to
        `offline` seconds, and come back resuming every room."""
        if client.busy:
            return
        client.busy = True
        await self._leave(client)
        await self._return(client, offline)
        client.tally.reconnects += 1

    async def home(self, client: Client) -> None:
        """Move a client connected elsewhere back to its own node."""
        if client.port != self.targets.ports[client.home] and not client.busy:
            client.busy = True
            await self._leave(client)
            await self._return(client, 0)

    async def _leave(self, client: Client) -> None:
        socket = client.socket
        if socket is None or socket.closed:
            return
        socket.leaving = True
        socket.transport.write(GOODBYE)
        socket.transport.close()
        await socket.gone

    async def _return(self, client: Client, within: float) -> None:
        await asyncio.sleep(random.uniform(0, within))
        await self.connect(client)

    def spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def beat(self, tick: int, interval: int) -> None:
        """Heartbeats of the devices whose turn `tick` is: each beats every `interval` s."""
        for device in self.devices[tick % interval :: interval]:
            device.send(BEAT)

    def displaced(self) -> int:
        """Clients not connected, or connected to another node than their own."""
        return sum(
            not client.connected or client.port != self.targets.ports[client.home]
            for client in self.clients
        )

    def resuming(self) -> int:
        """Rooms held until their subscribe's ack."""
        return sum(track.held is not None for d in self.devices for track in d.tracks.values())

    def connected_to(self, port: int) -> int:
        return sum(client.connected and client.port == port for client in self.clients)
