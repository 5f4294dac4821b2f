"""The one task that writes what this node's sessions reported to Redis, in order, and
rebuilds the copy there whenever it may have drifted from the node's sockets.

Reports gather for `FLUSH_SECONDS` and go out in one pipeline (`queue.WriteQueue`), or at
once when a connect waits for its own. A rebuild registers a new instance, writes every
socket the node holds under it, `RESYNC_BATCH` to a round trip, then retires the old one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from hub.backoff import reconnect_backoff
from hub.history import Retention
from hub.logs import decision
from hub.metrics import Metrics
from hub.outage import Outage
from hub.presence.queue import Write, WriteQueue, release
from hub.presence.registry import Registry
from hub.presence.scripts import REGISTRY, Scripts
from hub.redis.clients import RedisClient
from hub.redis.failures import FAILURES
from hub.redis.scripts import new_epoch

log = logging.getLogger("hub.presence")

FLUSH_SECONDS = 0.05
"""How long reports gather before they are written in one round trip."""
RESYNC_BATCH = 500
"""Sockets written per round trip when the copy in Redis is rebuilt."""


class Writer:
    """This node's reports on their way to Redis, and the rebuilds of what they wrote.

    Presence fills the queue through `put` (and waits on it); only the writer takes from
    it."""

    def __init__(
        self,
        redis: RedisClient,
        scripts: Scripts,
        registry: Registry,
        queue: WriteQueue,
        status: Retention,
        fleet: tuple[int, int],
        metrics: Metrics,
        outage: Outage,
        sockets: Callable[[], list[Write]],
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self._registry = registry
        self._status = status
        self._fleet = fleet
        """The fleet TTL and keep (ms), which every script call takes."""
        self._metrics = metrics
        self._outage = outage
        self._sockets = sockets
        """The connect of every socket the node holds now: what a rebuild writes."""
        self._queue = queue
        self.registered = False
        """Whether an instance was registered once (and its sockets written)."""
        self._enrolled: tuple[str, set[str]] = ("", set())
        """The instance, and the tenants it has enrolled in (`scripts.ENROL`)."""
        self._wake = asyncio.Event()

    def put(self, write: Write) -> None:
        if self._registry.stale:
            return  # the rebuild will write what this node holds then
        if not self._queue.put(write):
            log.warning("presence queue full: rebuilding presence in Redis")
            self._registry.stale = True
        self._wake.set()

    def wake(self) -> None:
        """Write now: what is queued, or a rebuild when the instance went stale."""
        self._wake.set()

    async def run(self) -> None:
        """Write whenever woken, until cancelled; a failure leads to a rebuild, after a
        wait that grows while Redis keeps failing."""
        backoff = reconnect_backoff()
        while True:
            await self._wake.wait()
            # The first registration has no reports to gather (none is queued before it),
            # and the node is not ready until it is done.
            if self.registered and not self._queue.waited_on:
                await asyncio.sleep(FLUSH_SECONDS)
            self._wake.clear()
            try:
                if self._registry.stale:
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
                self._registry.stale = True
                self._wake.set()
                await asyncio.sleep(backoff.next())

    async def finish(self) -> None:
        """Write what is queued, as the node stops; nothing when a rebuild is due, as the
        instance is retired next all the same."""
        if not self._registry.stale and len(self._queue):
            await self._flush()

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
        status, registry = self._status, self._registry
        common = (new_epoch(), registry.instance, status.size, status.ttl_ms, *self._fleet)
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
        instance = self._registry.instance
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
        registry = self._registry
        registry.renew()
        _, waiting = self._queue.take()
        writes = self._sockets()
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
        self.registered = True
        decision(
            log,
            "presence_registered",
            "presence registered in Redis",
            instance=registry.instance,
            sockets=len(writes),
        )
