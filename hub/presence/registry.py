"""This node process's registration in the cluster, and the reaping of dead nodes.

Each node process registers an *instance* in `hub:nodes` and refreshes it every
`HUB_NODE_TTL`/3 seconds; every node also looks for instances that stopped refreshing,
declares them dead and reports their devices offline (`node_lost`), in atomic scripts, so
that a dead node's devices are reported once however many nodes survive it.

An instance the node can no longer trust (a write failed, Redis lost its data, the cluster
declared it dead while it was cut off) is `stale`: the node then registers a new one,
writes every socket it holds under it, and retires the old one.
"""

from __future__ import annotations

import logging

from hub.broker.redis import new_epoch
from hub.config import Settings
from hub.disconnect import Gone
from hub.history import Retention
from hub.metrics import Metrics
from hub.presence.scripts import Scripts

log = logging.getLogger("hub.presence")

REAP_BUDGET = 1000
"""Sockets of dead nodes cleaned up per script call, to keep each call short."""


class Registry:
    """This process's instance in `hub:nodes` (naming, registering, refreshing, retiring),
    and the reaping of dead ones."""

    def __init__(
        self, scripts: Scripts, run: str, settings: Settings, status: Retention, metrics: Metrics
    ) -> None:
        self._scripts = scripts
        self._run = run
        self._ttl_ms = int(settings.node_ttl * 1000)
        self._status = status
        self._metrics = metrics
        self.generation = 0
        self.instance = f"{run}#0"
        self.stale = True
        """A new instance is due (none is registered yet at start)."""
        self._replaced: set[str] = set()

    def pkey(self, conn: str) -> str:
        """A socket's key in Redis under the current instance."""
        return f"{self.generation}|{conn}"

    def renew(self) -> None:
        """Name a new instance; the one it replaces is retired by `register`."""
        if self.generation:
            self._replaced.add(self.instance)
        self.generation += 1
        self.instance = f"{self._run}#{self.generation}"
        self.stale = False

    async def register(self) -> None:
        await self._scripts.register(args=[self.instance, self._ttl_ms])

    async def retire_replaced(self) -> None:
        """Retire the instances this one replaced: `REAP` cleans up what they left."""
        for instance in list(self._replaced):
            await self._scripts.retire(args=[instance, Gone.CLOSED.value])
            self._replaced.discard(instance)

    async def refresh(self) -> None:
        """Push this instance's expiry back; find out if it was declared dead meanwhile."""
        if self.stale:
            return
        instance = self.instance
        live = await self._scripts.refresh(args=[instance, self._ttl_ms])
        if not live and instance == self.instance and not self.stale:
            self.declared_dead()

    def declared_dead(self) -> None:
        log.warning("this node was declared dead: registering again")
        self.stale = True

    async def leave(self) -> None:
        """Retire this instance for good: the node is stopping."""
        await self._scripts.retire(args=[self.instance, Gone.CLOSED.value])
        await self.reap()

    async def reap(self) -> None:
        """Declare the expired instances dead and report their devices offline; every node
        runs this, and each device is reported once."""
        status = self._status
        args: list[str | int] = [
            new_epoch(),
            REAP_BUDGET,
            status.size,
            status.ttl_ms,
            Gone.NODE_LOST.value,
        ]
        left = 1
        while left:
            offline, declared, left = await self._scripts.reap(args=args)
            if declared or offline:
                log.info(
                    "declared %d node(s) dead, reported %d device(s) offline", declared, offline
                )
                self._metrics.devices_reaped.inc(offline)
