"""This node process's registration in the cluster, and the reaping of dead nodes.

Each node process registers an *instance* in `hub:{hub}:nodes` and refreshes it every
`HUB_NODE_TTL`/3 seconds; every node also looks for instances that stopped refreshing,
declares them dead and reports their devices offline (`node_lost`), tenant by tenant in
atomic scripts, so that a dead node's devices are reported once however many nodes survive
it (`hub.presence.scripts`).

An instance the node can no longer trust (a write failed, Redis lost its data, the cluster
declared it dead while it was cut off) is `stale`: the node then registers a new one,
writes every socket it holds under it, and retires the old one.
"""

from __future__ import annotations

import logging
from typing import Any

from hub.config import Settings
from hub.disconnect import Gone
from hub.history import Retention
from hub.logs import decision
from hub.metrics import Metrics
from hub.presence.scripts import REGISTRY, Scripts
from hub.redis.clients import RedisClient
from hub.redis.scripts import ScriptCall, call_all, new_epoch
from hub.rooms import tag

log = logging.getLogger("hub.presence")

REAP_BUDGET = 1000
"""Sockets of dead nodes cleaned up per script call, to keep each call short."""
TENANTS_PER_PASS = 200
"""Tenants of dead or draining instances one reaping pass works on."""


def fleet_keep(settings: Settings) -> float:
    """Seconds a tenant's fleet keys outlive their last write: the fleet TTL, plus more
    than the longest a device still online goes without one (silent until its heartbeat
    timeout, the longest any claimed interval makes, then reported offline after a drain's
    handover window or its node's death), so that the keys never expire under an online
    device, whatever the TTL."""
    silence = (
        settings.longest_heartbeat_timeout + settings.handover_seconds + settings.node_death_bound
    )
    return settings.fleet_ttl + silence


class Registry:
    """This process's instance in `hub:nodes` (naming, registering, refreshing, retiring),
    and the reaping of dead ones."""

    def __init__(
        self,
        redis: RedisClient,
        scripts: Scripts,
        run: str,
        settings: Settings,
        status: Retention,
        metrics: Metrics,
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self._fleet = (int(settings.fleet_ttl * 1000), int(fleet_keep(settings) * 1000))
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
        await self._scripts.register(keys=[REGISTRY], args=[self.instance, self._ttl_ms])

    async def retire_replaced(self) -> None:
        """Retire the instances this one replaced: `REAP` cleans up what they left."""
        for instance in list(self._replaced):
            await self._scripts.retire(keys=[REGISTRY], args=[instance, Gone.CLOSED.value])
            self._replaced.discard(instance)

    async def refresh(self) -> None:
        """Push this instance's expiry back; find out if it was declared dead meanwhile."""
        if self.stale:
            return
        instance = self.instance
        live = await self._scripts.refresh(keys=[REGISTRY], args=[instance, self._ttl_ms])
        if not live and instance == self.instance and not self.stale:
            self.declared_dead()

    def declared_dead(self) -> None:
        decision(
            log,
            "declared_dead",
            "this node was declared dead: registering again",
            logging.WARNING,
            instance=self.instance,
        )
        self.stale = True

    async def leave(self) -> None:
        """Retire this instance for good: the node is stopping."""
        await self._scripts.retire(keys=[REGISTRY], args=[self.instance, Gone.CLOSED.value])
        await self.reap()

    async def reap(self) -> None:
        """Declare the expired instances dead and report their devices offline; every
        node runs this, and each device is reported once."""
        while True:
            declared, work = _work(
                await self._scripts.reap_nodes(
                    keys=[REGISTRY], args=[Gone.NODE_LOST.value, TENANTS_PER_PASS]
                )
            )
            calls = [
                (instance, reason, tenant)
                for instance, reason, tenants in work
                for tenant in tenants
            ]
            results = await self._reap_tenants(calls) if calls else []
            offline = sum(int(result[0]) for result in results)
            if declared or offline:
                decision(
                    log,
                    "nodes_reaped",
                    "declared nodes dead and reported their devices offline",
                    declared=declared,
                    devices=offline,
                )
                self._metrics.devices_reaped.inc(offline)
            done: dict[str, list[str]] = {}
            for (instance, _, tenant), result in zip(calls, results, strict=True):
                if result[1]:
                    done.setdefault(instance, []).append(tenant)
            for instance, tenants in done.items():
                await self._scripts.reaped(keys=[REGISTRY], args=[instance, *tenants])
            more = any(result[2] for result in results)
            if not (more or (done and len(calls) >= TENANTS_PER_PASS)):
                return

    async def _reap_tenants(self, calls: list[tuple[str, str, str]]) -> list[Any]:
        """One `TENANT_REAP` per (instance, reason, tenant), in one pipeline (see
        `call_all` for a Redis that lost the script)."""
        status, script = self._status, self._scripts.tenant_reap
        common = (status.size, status.ttl_ms, *self._fleet)
        reaps = [
            ScriptCall(
                script, tag(tenant), [new_epoch(), instance, *common, tenant, reason, REAP_BUDGET]
            )
            for instance, reason, tenant in calls
        ]
        results = await call_all(self._redis, reaps)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results


def _work(reply: list[Any]) -> tuple[int, list[tuple[str, str, list[str]]]]:
    """`REAP_NODES`' answer: instances declared dead now, and (instance, reason, tenants)."""
    declared, work, at = int(reply[0]), [], 1
    while at < len(reply):
        instance, reason, count = reply[at].decode(), reply[at + 1].decode(), int(reply[at + 2])
        tenants = [tenant.decode() for tenant in reply[at + 3 : at + 3 + count]]
        work.append((instance, reason, tenants))
        at += 3 + count
    return declared, work
