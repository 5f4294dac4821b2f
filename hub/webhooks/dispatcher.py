"""The node's side of delivery: which tenants it delivers for (a lease each, on a fair
share of them), and their new messages, read into each tenant's lines.

A round renews the leases now and then and takes free tenants, reads the held tenants' new
`status` events, loads a tenant whose endpoints changed, then starts what may go, the
tenants in turn. It never awaits a send: those are tasks of their own (`hub.webhooks.tenant`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time

from hub.backoff import reconnect_backoff
from hub.logs import decision
from hub.metrics import Metrics
from hub.protocol import now_ms
from hub.tasks import cancel
from hub.webhooks.attempts import Attempts, Timing
from hub.webhooks.model import Endpoint
from hub.webhooks.sealing import Sealer
from hub.webhooks.sender import Sender
from hub.webhooks.store import Polled, Store
from hub.webhooks.tenant import Tenant

log = logging.getLogger("hub.webhooks")


class Dispatcher:
    """Holds leases on a fair share of the tenants, reads their new messages into them, and
    gives each its turn to send."""

    def __init__(
        self,
        store: Store,
        sender: Sender,
        sealer: Sealer | None,
        timing: Timing,
        metrics: Metrics,
    ) -> None:
        self._store = store
        self._sealer = sealer
        self._timing = timing
        self._metrics = metrics
        self._attempts = Attempts(store, sender, timing, metrics)
        self._held: dict[str, Tenant] = {}
        self._turn = 0
        self._claim_at = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhooks")

    async def stop(self) -> None:
        """Stop sending and give the leases up: another node takes the tenants at once and
        sends again what was in flight."""
        await cancel([self._task])
        held, self._held = self._held, {}
        await cancel([task for tenant in held.values() for task in tenant.let_go()])
        try:
            await self._store.release(list(held))
        except Exception as error:  # the leases then expire on their own
            log.warning("could not give up the webhook leases: %s", error)

    def claim_soon(self) -> None:
        """Look for tenants to deliver for at the next round (one just got an endpoint)."""
        self._claim_at = 0.0

    def pending(self) -> int:
        """Messages this node holds pending."""
        return sum(tenant.pending() for tenant in self._held.values())

    def oldest_pending(self) -> float:
        """Seconds since the oldest message this node holds pending was taken; 0 if none."""
        oldest = min(
            (taken for tenant in self._held.values() if (taken := tenant.oldest()) is not None),
            default=None,
        )
        return 0.0 if oldest is None else max(0.0, time.time() - oldest / 1000)

    async def _run(self) -> None:
        backoff = reconnect_backoff()
        while True:
            try:
                await self._round()
            except Exception as error:  # Redis away, or a bug: log, go on
                log.warning("webhook delivery round failed: %s", error)
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            await asyncio.sleep(self._timing.poll)

    async def _round(self) -> None:
        if time.monotonic() >= self._claim_at:
            await self._claim()
        polled = await self._store.poll(
            [name for name, tenant in self._held.items() if tenant.loaded], now_ms()
        )
        let_go = [name for name, changes in polled.items() if not self._apply(name, changes)]
        if let_go:
            await self._store.release(let_go)
        for tenant in [tenant for tenant in self._held.values() if not tenant.loaded]:
            await self._load(tenant)
        self._schedule_all(now_ms())

    async def _claim(self) -> None:
        """Renew the leases held, and take free tenants up to a fair share: the tenants
        over the live nodes, plus one (one lease per tenant keeps its messages in order)."""
        tenants, nodes = await self._store.share()
        kept = set(await self._store.renew(list(self._held)))
        self._claim_at = time.monotonic() + self._store.lease / 3
        for name in [name for name in self._held if name not in kept]:
            self._drop(name)
        share = math.ceil(len(tenants) / max(nodes, 1)) + 1
        if len(self._held) > share:
            over = list(self._held)[share:]
            for name in over:
                self._drop(name)
            await self._store.release(over)
            return
        free = [tenant for tenant in tenants if tenant not in self._held]
        random.shuffle(free)
        while free and len(self._held) < share:
            room = share - len(self._held)
            batch, free = free[:room], free[room:]
            for name in await self._store.acquire(batch):
                self._held[name] = Tenant(name, self._attempts)

    def _drop(self, name: str) -> None:
        """No longer deliver for the tenant: its sends in flight are cancelled (the next
        holder sends them again)."""
        tenant = self._held.pop(name, None)
        if tenant is not None:
            for task in tenant.let_go():
                task.cancel()

    async def _load(self, tenant: Tenant) -> None:
        held = await self._store.load(tenant.name)
        opened = [
            (endpoint, self._open(tenant.name, endpoint, sealed))
            for endpoint, sealed in held.endpoints
        ]
        tenant.load(opened, held.pending)

    def _open(self, tenant: str, endpoint: Endpoint, sealed: str) -> str | None:
        if self._sealer is not None:
            try:
                return self._sealer.open(sealed, f"{tenant}/{endpoint.id}")
            except ValueError as error:
                reason = str(error)
        else:
            reason = "no HUB_WEBHOOK_KEY (nor HUB_JWT_SECRET) to open it"
        decision(
            log,
            "webhook_secret_unusable",
            "a webhook endpoint's secret does not open: its messages wait",
            logging.WARNING,
            tenant=tenant,
            endpoint=endpoint.id,
            reason=reason,
        )
        return None

    def _apply(self, name: str, polled: Polled) -> bool:
        """Take one read's changes into the tenant's queues; False when this node no
        longer delivers for it."""
        tenant = self._held.get(name)
        if tenant is None:
            return True
        if not polled.held:
            self._drop(name)
            return False
        if polled.reload:
            tenant.loaded = False
            return True
        tenant.take(polled)
        if polled.failed:
            self._metrics.webhook_deliveries.labels("failed").inc(len(polled.failed))
        return True

    def _schedule_all(self, now: int) -> None:
        """Start what may go, the tenants in turn, so that none always comes first."""
        tenants = list(self._held.values())
        if not tenants:
            return
        self._turn = (self._turn + 1) % len(tenants)
        for tenant in tenants[self._turn :] + tenants[: self._turn]:
            tenant.schedule(now)
