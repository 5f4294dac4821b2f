"""Presence across the cluster, kept in Redis (see `hub.presence.scripts` for the keys).

What a session reports is recorded locally at once and queued as a script call for
`writer.Writer`, which writes them in order, one pipeline per `FLUSH_SECONDS`: 20,000
devices beating every 15 s cost about 20 round trips a second, not 1,300. The node's
registration and the reaping of dead nodes are `registry.Registry`'s; the listings are
read by `reads.Reads`.

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
from hub.fleet import FleetPage, FleetQuery
from hub.history import RetentionRules
from hub.metrics import Metrics
from hub.outage import Outage
from hub.presence.base import MemberRecord, Place, Presence, Present
from hub.presence.queue import Write, WriteQueue
from hub.presence.reads import Reads
from hub.presence.registry import Registry, fleet_keep
from hub.presence.scripts import NO_TENANT, Scripts
from hub.presence.writer import Writer
from hub.protocol import encode
from hub.redis.clients import RedisClient
from hub.redis.failures import FAILURES
from hub.rooms import RoomKey
from hub.stats import Dropped, Tally
from hub.tasks import cancel

log = logging.getLogger("hub.presence")


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
        self._scripts = scripts
        self.registry = registry
        self._refresh = settings.node_refresh
        self._handover_ms = int(settings.handover_seconds * 1000)
        self._fleet_keep_ms = int(fleet_keep(settings) * 1000)
        self._local: dict[str, Present] = {}
        self._queue = WriteQueue(scripts.heartbeats)
        fleet = (self._fleet_ttl_ms, self._fleet_keep_ms)
        self._writer = Writer(
            redis,
            scripts,
            registry,
            self._queue,
            self._status,
            fleet,
            metrics,
            outage,
            self._sockets,
        )
        self._reads = Reads(reader, self._fleet_ttl_ms)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def ready(self) -> bool:
        """Registered once: until then heartbeats are not written (the first registration
        writes the sockets the node holds, not what they reported meanwhile)."""
        return self._writer.registered

    async def start(self) -> None:
        self._writer.wake()
        self._tasks = [
            asyncio.create_task(self._writer.run(), name="presence-writer"),
            asyncio.create_task(self._watch(), name="presence-watch"),
        ]

    async def stop(self) -> None:
        await cancel(self._tasks)
        try:
            await self._writer.finish()
            await self.registry.leave()
        except FAILURES as error:
            log.warning("presence not handed over (%s): the cluster will reap it", error)

    async def members(
        self, key: RoomKey, after: Place | None = None, count: int | None = None
    ) -> list[MemberRecord]:
        return await self._reads.members(key, after, count)

    async def devices(self, tenant: str, query: FleetQuery) -> FleetPage:
        return await self._reads.devices(tenant, query)

    # What sessions report: recorded locally at once, written to Redis in order.

    async def _connected(self, present: Present) -> None:
        """Return once the socket is in Redis (its device announced), without waiting for
        the next batch: a device welcomed on a second node before its first socket closed
        is then already known there, so the close cannot take it offline."""
        self._local[present.conn] = present
        self._writer.put(self._connect_write(present))
        if self.registry.stale:
            return  # the rebuild, when Redis answers, will write it
        await self._queue.written()

    def _joined(self, present: Present, key: RoomKey) -> None:
        member = encode(present.member(self.node, key))
        self._writer.put((self._scripts.join, _tenant(present), [present.conn, key.name, member]))

    def _left(self, present: Present, key: RoomKey) -> None:
        self._writer.put((self._scripts.leave, _tenant(present), [present.conn, key.name]))

    def _disconnected(self, present: Present, reason: Gone) -> None:
        self._local.pop(present.conn, None)
        # A drained node's devices get a window to reconnect elsewhere before going offline.
        handover = self._handover_ms if reason is Gone.NODE_RESTART else 0
        args = [present.conn, reason.value, handover]
        self._writer.put((self._scripts.disconnect, _tenant(present), args))

    def _beat(self, present: Present, record: dict[str, Any], event: Outgoing) -> None:
        device = present.device
        assert device is not None
        if self.registry.stale:
            return
        if not self._queue.admit_beat():
            self._tally.dropped[Dropped.HEARTBEAT_BACKLOG] += 1
            return
        args = [present.conn, device[1], encode(record), event.prefix, event.suffix]
        self._writer.put((self._scripts.heartbeats, device[0], args))

    def _sockets(self) -> list[Write]:
        """The connect of every socket this node holds: what a rebuild writes."""
        return [self._connect_write(present) for present in self._local.values()]

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

    async def _watch(self) -> None:
        """Refresh this node's registration; declare dead the nodes that stopped doing so."""
        while True:
            await asyncio.sleep(self._refresh)
            try:
                await self.registry.refresh()
                if self.registry.stale:
                    self._writer.wake()
                await self.registry.reap()
            except FAILURES as error:
                self._outage.failed("presence watch", error)


def _fleet_head(present: Present) -> str:
    """The device's fleet record cut after `loc` and `groups`: the script that reports it
    offline, wherever it runs, adds the rest."""
    return orjson.dumps({"loc": present.loc, "groups": list(present.groups)})[:-1].decode()


def _tenant(present: Present) -> str:
    """The tenant whose keys hold the socket (an admin's without one: `NO_TENANT`'s)."""
    return present.tenant or NO_TENANT
