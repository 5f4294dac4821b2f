"""Presence across the cluster, kept in Redis (see `hub.presence.scripts` for the keys).

What a session reports is recorded locally at once, queued (`queue.WriteQueue`) and
written by one task, in order, one pipeline per `FLUSH_SECONDS`: 20,000 devices beating
every 15 s cost about 20 round trips a second, not 1,300. The node's registration and the
reaping of dead nodes are `registry.Registry`'s.

Whenever the copy in Redis may have drifted from this node's sockets (a write failed,
Redis lost its data, or the cluster declared this node dead while it was cut off), the
node registers a new instance, writes every socket it holds under it, then retires the
old instance: sockets that closed meanwhile are reported offline then, and nothing the
old instance left behind can come back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from hub import envelope
from hub.broker import Outgoing
from hub.config import Settings
from hub.disconnect import Gone
from hub.fleet import SCAN_BUDGET, Device, FleetPage, FleetQuery
from hub.history import RetentionRules
from hub.logs import decision
from hub.metrics import Metrics
from hub.outage import Outage
from hub.presence.base import MemberRecord, Place, Presence, Present, first_members
from hub.presence.queue import Write, WriteQueue, release
from hub.presence.registry import Registry, fleet_keep
from hub.presence.scripts import (
    FLEET_PAGE,
    NO_TENANT,
    REGISTRY,
    ROOM_PREFIX,
    Scripts,
    heartbeats_key,
)
from hub.protocol import encode
from hub.redis.clients import RedisClient
from hub.redis.failures import FAILURES, reconnect_backoff, unavailable
from hub.redis.scripts import new_epoch
from hub.rooms import RoomKey, tag
from hub.stats import Dropped, Tally
from hub.tasks import cancel

log = logging.getLogger("hub.presence")

FLUSH_SECONDS = 0.05
"""How long reports gather before they are written in one round trip."""
RESYNC_BATCH = 500
"""Sockets written per round trip when the copy in Redis is rebuilt."""
PARSE_CHUNK = 5000
"""Members of a room parsed in one turn of the event loop (a few ms) when it is listed."""


def _fleet_head(present: Present) -> str:
    """The device's fleet record cut after `loc` and `groups`: the script that reports it
    offline, wherever it runs, adds the rest."""
    return orjson.dumps({"loc": present.loc, "groups": list(present.groups)})[:-1].decode()


def _device(sub: bytes, record: bytes, heartbeat: bytes | None, seen: bytes) -> Device:
    return {
        "sub": sub.decode(),
        **orjson.loads(record),
        "last_seen": int(float(seen)),
        "heartbeat": None if heartbeat is None else orjson.loads(heartbeat),
    }


class RedisPresence(Presence):
    """Keeps this node's sockets as the truth and their copy in Redis for every node."""

    def __init__(
        self,
        redis: RedisClient,
        reader: RedisClient,
        scripts: Scripts,
        registry: Registry,
        settings: Settings,
        retention: RetentionRules,
        tally: Tally,
        metrics: Metrics,
        outage: Outage,
    ) -> None:
        super().__init__(settings, retention, tally)
        self._outage = outage
        self._redis = redis
        self._reader = reader
        self._scripts = scripts
        self.registry = registry
        self._refresh = settings.node_refresh
        self._handover_ms = int(settings.handover_seconds * 1000)
        self._fleet_keep_ms = int(fleet_keep(settings) * 1000)
        self._fleet_page = reader.register_script(FLEET_PAGE)
        self._metrics = metrics
        self._registered = False
        self._enrolled: tuple[str, set[str]] = ("", set())
        """The instance, and the tenants it has enrolled in (`scripts.ENROL`)."""
        self._local: dict[str, Present] = {}
        self._queue = WriteQueue(self._scripts.heartbeats)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def ready(self) -> bool:
        """Registered once: until then heartbeats are not written (the first registration
        writes the sockets the node holds, not what they reported meanwhile)."""
        return self._registered

    async def start(self) -> None:
        self._wake.set()
        self._tasks = [
            asyncio.create_task(self._write(), name="presence-writer"),
            asyncio.create_task(self._watch(), name="presence-watch"),
        ]

    async def stop(self) -> None:
        await cancel(self._tasks)
        try:
            if not self.registry.stale and len(self._queue):
                await self._flush()
            await self.registry.leave()
        except FAILURES as error:
            log.warning("presence not handed over (%s): the cluster will reap it", error)

    async def members(
        self, key: RoomKey, after: Place | None = None, count: int | None = None
    ) -> list[MemberRecord]:
        """The room's hash is read whole (it is in no order), and parsed `PARSE_CHUNK`
        members at a time between turns of the event loop, keeping only the first `count`."""
        with unavailable("redis presence read failed"):
            raw = await self._reader.hvals(ROOM_PREFIX + key.name)
            keep = len(raw) if count is None else count
            chosen: list[MemberRecord] = []
            for at in range(0, len(raw), PARSE_CHUNK):
                if at:
                    await asyncio.sleep(0)
                parsed = map(orjson.loads, raw[at : at + PARSE_CHUNK])
                chosen = first_members([*chosen, *parsed], after, keep)
            devices = [entry for entry in chosen if entry["role"] == "device"]
            beats = []
            if devices:
                beats = await self._reader.hmget(
                    heartbeats_key(key.tenant), [entry["sub"] for entry in devices]
                )
        for entry in chosen:
            entry["heartbeat"] = None
        for entry, beat in zip(devices, beats, strict=True):
            entry["heartbeat"] = orjson.loads(beat) if beat else None
        return chosen

    async def devices(self, tenant: str, query: FleetQuery) -> FleetPage:
        online = "" if query.online is None else str(query.online).lower()
        args: list[str | int] = [tenant, query.after or "", query.limit, SCAN_BUDGET]
        args += [self._fleet_ttl_ms, query.loc or "", query.group or "", online]
        with unavailable("redis fleet read failed"):
            after, *found = await self._fleet_page(keys=[tag(tenant)], args=args)
        devices = [_device(*found[at : at + 4]) for at in range(0, len(found), 4)]
        return FleetPage(devices, None if after is None else after.decode())

    # What sessions report: recorded locally at once, written to Redis in order.

    async def _connected(self, present: Present) -> None:
        """Return once the socket is in Redis (its device announced), without waiting for
        the next batch: a device welcomed on a second node before its first socket closed
        is then already known there, so the close cannot take it offline."""
        self._local[present.conn] = present
        self._put(self._connect_write(present))
        if self.registry.stale:
            return  # the rebuild, when Redis answers, will write it
        await self._queue.written()

    def _joined(self, present: Present, key: RoomKey) -> None:
        member = encode(present.member(self.node, key))
        self._put((self._scripts.join, _tenant(present), [present.conn, key.name, member]))

    def _left(self, present: Present, key: RoomKey) -> None:
        self._put((self._scripts.leave, _tenant(present), [present.conn, key.name]))

    def _disconnected(self, present: Present, reason: Gone) -> None:
        self._local.pop(present.conn, None)
        # A drained node's devices get a window to reconnect elsewhere before going offline.
        handover = self._handover_ms if reason is Gone.NODE_RESTART else 0
        args = [present.conn, reason.value, handover]
        self._put((self._scripts.disconnect, _tenant(present), args))

    def _beat(self, present: Present, record: dict[str, Any], event: Outgoing) -> None:
        device = present.device
        assert device is not None
        if self.registry.stale:
            return
        if not self._queue.admit_beat():
            self._tally.dropped[Dropped.HEARTBEAT_BACKLOG] += 1
            return
        args = [present.conn, device[1], encode(record), event.prefix, event.suffix]
        self._put((self._scripts.heartbeats, device[0], args))

    def _connect_write(self, present: Present) -> Write:
        device = present.device
        record: dict[str, Any] = {"t": _tenant(present), "s": present.sub}
        online: tuple[bytes, bytes, bytes] = (b"", b"", b"")
        if device is not None:
            record["o"] = self.offline_head(present).decode()
            record["f"] = _fleet_head(present)
            record["k"] = self._fleet_keep_ms
            event = self.online_event(present)
            online = (event.prefix, event.suffix, self._online_record(present, event))
        args: list[Any] = [present.conn, encode(record), present.sub, *online]
        for key in present.rooms:
            args += [key.name, encode(present.member(self.node, key))]
        return self._scripts.connect, _tenant(present), args

    def _online_record(self, present: Present, event: Outgoing) -> bytes:
        """The device's fleet record as it goes online with `event`: since the event's ts."""
        return orjson.dumps(
            {
                "loc": present.loc,
                "groups": list(present.groups),
                "online": True,
                "node": self.node,
                "since": envelope.ts_of(event.prefix),
                "offline_reason": None,
            }
        )

    def _put(self, write: Write) -> None:
        if self.registry.stale:
            return  # the rebuild will write what this node holds then
        if not self._queue.put(write):
            log.warning("presence queue full: rebuilding presence in Redis")
            self.registry.stale = True
        self._wake.set()

    # Writing.

    async def _write(self) -> None:
        backoff = reconnect_backoff()
        while True:
            await self._wake.wait()
            if not self._queue.waited_on:
                await asyncio.sleep(FLUSH_SECONDS)
            self._wake.clear()
            try:
                if self.registry.stale:
                    await self._resync()
                    self._outage.answered()
                elif len(self._queue):
                    await self._flush()
                    self._outage.answered()
                backoff.reset()
            except Exception as error:
                if isinstance(error, FAILURES):
                    self._outage.failed("presence", error)
                else:
                    log.exception("presence write failed: rebuilding")
                self.registry.stale = True
                self._wake.set()
                await asyncio.sleep(backoff.next())

    async def _flush(self) -> None:
        writes, waiting = self._queue.take()
        try:
            await self._execute(writes)
        finally:
            release(waiting)

    async def _execute(self, writes: list[Write]) -> None:
        """Send `writes` for the current instance, with scripts loaded by `_resync`; a Redis
        that lost them (restarted) answers NOSCRIPT, which fails the write and so leads to
        a rebuild."""
        status, registry = self._status, self.registry
        common = (
            new_epoch(),
            registry.instance,
            status.size,
            status.ttl_ms,
            self._fleet_ttl_ms,
            self._fleet_keep_ms,
        )
        # Heartbeats alone skip `ENROL`: why, see `hub.presence.scripts`.
        beats_only = all(script is self._scripts.heartbeats for script, _, _ in writes)
        if not beats_only and not await self._enrol(writes):
            registry.declared_dead()
            self._wake.set()
            return
        pipe = self._queue.pipeline(self._redis, writes, common, registry.pkey)
        results = await pipe.execute()
        self._metrics.presence_writes.inc(len(writes))
        self._metrics.presence_round_trips.inc(1 if beats_only else 2)
        if not all(results):
            registry.declared_dead()
            self._wake.set()

    async def _enrol(self, writes: list[Write]) -> bool:
        """Tell the registry which tenants this instance is about to write in (and that
        it lets devices leave with a window, when a drain does); False when the instance
        is no longer live, so the writes must not go out."""
        instance = self.registry.instance
        if self._enrolled[0] != instance:
            self._enrolled = (instance, set())
        enrolled = self._enrolled[1]
        new = {tenant for _, tenant, _ in writes} - enrolled
        leaving = any(script is self._scripts.disconnect and args[2] for script, _, args in writes)
        live = await self._scripts.enrol(
            keys=[REGISTRY], args=[instance, "1" if leaving else "", *sorted(new)]
        )
        if live:
            enrolled |= new
        return bool(live)

    async def _resync(self) -> None:
        """Write every socket of this node under a new instance, then retire the old one."""
        registry = self.registry
        registry.renew()
        _, waiting = self._queue.take()
        writes = [self._connect_write(present) for present in self._local.values()]
        try:
            await self._scripts.load()
            await registry.register()
            for start in range(0, len(writes), RESYNC_BATCH):
                await self._execute(writes[start : start + RESYNC_BATCH])
            await registry.retire_replaced()
            await registry.reap()
        except BaseException:
            registry.stale = True
            raise
        finally:
            release(waiting)
        self._registered = True
        decision(
            log,
            "presence_registered",
            "presence registered in Redis",
            instance=registry.instance,
            sockets=len(writes),
        )

    async def _watch(self) -> None:
        """Refresh this node's registration; declare dead the nodes that stopped doing so."""
        while True:
            await asyncio.sleep(self._refresh)
            try:
                await self.registry.refresh()
                if self.registry.stale:
                    self._wake.set()
                await self.registry.reap()
            except FAILURES as error:
                self._outage.failed("presence watch", error)


def _tenant(present: Present) -> str:
    """The tenant whose keys hold the socket (an admin's without one: `NO_TENANT`'s)."""
    return present.tenant or NO_TENANT
