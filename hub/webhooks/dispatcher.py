"""The node's side of delivery: the tenants it delivers for (their leases), their pending
messages, and the sends.

Every send is a task of its own, and nothing that reads Redis or serves sockets awaits
one: a slow or dead endpoint holds back only its own messages. An endpoint has at most
`PER_ENDPOINT` sends in flight, a tenant `PER_TENANT`, the node `OVERALL`; an endpoint's
messages go in order, those of different devices side by side, the next of a device only
once the one before it is delivered or failed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field, replace

from hub.logs import decision
from hub.metrics import Metrics
from hub.redis.failures import reconnect_backoff
from hub.tasks import cancel
from hub.webhooks.model import Delivery, Endpoint, State
from hub.webhooks.sealing import Sealer
from hub.webhooks.sender import Outcome, Sender, retry_delay
from hub.webhooks.store import Polled, Store

log = logging.getLogger("hub.webhooks")

PER_ENDPOINT = 4
PER_TENANT = 16
OVERALL = 64
"""Sends in flight at most: the `Sender`'s connections."""
STORE_AT_ONCE = 2
"""Store calls (a body, an attempt's result) the sends make at once: the node's few Redis
write connections stay free for its publishes and presence."""
POLL_INTERVAL = 0.15
"""Seconds between two reads of the held tenants' new `status` events."""
NEVER = sys.maxsize


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Timing:
    """When messages are tried again, and how often new ones are looked for."""

    retry_base: float
    """Seconds before the first retry; each next waits about twice as long."""
    retry_hours: float
    """A message still failing this long after it was taken has failed."""
    poll: float = POLL_INTERVAL


@dataclass(slots=True, eq=False)
class _Line:
    """One endpoint's pending messages on the node that delivers them."""

    endpoint: Endpoint
    secret: str | None
    """None when the sealed secret does not open here (another key): nothing is sent."""
    queue: dict[str, Delivery]
    """By webhook id, in `seq` order."""
    busy: set[str] = field(default_factory=set)
    """Devices with a message in flight."""
    flying: set[str] = field(default_factory=set)
    """Webhook ids in flight."""
    wake: int = 0
    """When (ms) a message waiting for its next attempt is due."""
    dirty: bool = True
    """Something changed that may let a message go."""


@dataclass(slots=True, eq=False)
class _Tenant:
    name: str
    lines: dict[str, _Line] = field(default_factory=dict)
    loaded: bool = False
    flying: int = 0
    sends: set[asyncio.Task[None]] = field(default_factory=set)


class Dispatcher:
    """Holds leases on a fair share of the tenants and sends their messages."""

    def __init__(
        self,
        store: Store,
        sender: Sender,
        sealer: Sealer | None,
        timing: Timing,
        metrics: Metrics,
    ) -> None:
        self._store = store
        self._sender = sender
        self._sealer = sealer
        self._timing = timing
        self._metrics = metrics
        self._held: dict[str, _Tenant] = {}
        self._flying = 0
        self._turn = 0
        self._claim_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._store_turns = asyncio.Semaphore(STORE_AT_ONCE)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhooks")

    async def stop(self) -> None:
        """Stop sending and give the leases up: another node takes the tenants at once and
        sends again what was in flight."""
        await cancel([self._task])
        held, self._held = self._held, {}
        await cancel([task for tenant in held.values() for task in tenant.sends])
        try:
            await self._store.release(list(held))
        except Exception as error:  # the leases then expire on their own
            log.warning("could not give up the webhook leases: %s", error)

    def claim_soon(self) -> None:
        """Look for tenants to deliver for at the next round (one just got an endpoint)."""
        self._claim_at = 0.0

    def pending(self) -> int:
        """Messages this node holds pending."""
        return sum(
            len(line.queue) for tenant in self._held.values() for line in tenant.lines.values()
        )

    def oldest_pending(self) -> float:
        """Seconds since the oldest message this node holds pending was taken; 0 if none."""
        oldest = min(
            (
                next(iter(line.queue.values())).created
                for tenant in self._held.values()
                for line in tenant.lines.values()
                if line.queue
            ),
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
                self._held[name] = _Tenant(name)

    def _drop(self, name: str) -> None:
        """No longer deliver for the tenant: its sends in flight are cancelled (the next
        holder sends them again)."""
        tenant = self._held.pop(name, None)
        if tenant is not None:
            for task in tenant.sends:
                task.cancel()

    async def _load(self, tenant: _Tenant) -> None:
        held = await self._store.load(tenant.name)
        lines: dict[str, _Line] = {}
        for endpoint, sealed in held.endpoints:
            queue = {delivery.id: delivery for delivery in held.pending.get(endpoint.id, [])}
            line = _Line(endpoint, self._open(tenant.name, endpoint, sealed), queue)
            earlier = tenant.lines.get(endpoint.id)
            if earlier is not None:
                line.busy, line.flying = earlier.busy, earlier.flying
            lines[endpoint.id] = line
        tenant.lines = lines
        tenant.loaded = True

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
        for endpoint_id, delivery in polled.added:
            line = tenant.lines.get(endpoint_id)
            if line is None:
                tenant.loaded = False
                continue
            line.queue[delivery.id] = delivery
            line.dirty = True
        for endpoint_id, webhook_id in [*polled.dropped, *polled.failed]:
            line = tenant.lines.get(endpoint_id)
            if line is not None:
                line.queue.pop(webhook_id, None)
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
            for line in tenant.lines.values():
                if line.dirty or line.wake <= now:
                    self._schedule(tenant, line, now)

    def _schedule(self, tenant: _Tenant, line: _Line, now: int) -> None:
        """Start the endpoint's messages that may go: the first pending one of each device,
        once due, within the bounds."""
        seen: set[str] = set()
        wake = NEVER
        for delivery in line.queue.values():
            if len(line.flying) >= PER_ENDPOINT:
                break  # a send that ends schedules the line again
            if tenant.flying >= PER_TENANT or self._flying >= OVERALL:
                line.dirty = True
                return
            if delivery.device in seen:
                continue
            seen.add(delivery.device)
            if delivery.id in line.flying or delivery.device in line.busy:
                continue
            if delivery.next is not None and delivery.next > now:
                wake = min(wake, delivery.next)
                continue
            if line.secret is None:
                break
            self._launch(tenant, line, line.secret, delivery)
        line.dirty = False
        line.wake = wake

    def _launch(self, tenant: _Tenant, line: _Line, secret: str, delivery: Delivery) -> None:
        line.flying.add(delivery.id)
        line.busy.add(delivery.device)
        tenant.flying += 1
        self._flying += 1
        task = asyncio.create_task(self._send(tenant, line, secret, delivery))
        tenant.sends.add(task)
        task.add_done_callback(tenant.sends.discard)

    async def _send(self, tenant: _Tenant, line: _Line, secret: str, delivery: Delivery) -> None:
        endpoint = line.endpoint
        try:
            await self._attempt(tenant, endpoint, secret, delivery)
        except Exception as error:  # Redis away: try again later
            log.warning("webhook %s to %s: %s", delivery.id, endpoint.url, error)
            later = now_ms() + int(self._timing.retry_base * 1000)
            self._keep(tenant, endpoint.id, replace(delivery, next=later))
        finally:
            line.flying.discard(delivery.id)
            line.busy.discard(delivery.device)
            tenant.flying -= 1
            self._flying -= 1
            if self._held.get(tenant.name) is tenant:
                now = now_ms()
                for current in tenant.lines.values():
                    if current.endpoint.id == endpoint.id or current.dirty:
                        self._schedule(tenant, current, now)

    async def _attempt(
        self, tenant: _Tenant, endpoint: Endpoint, secret: str, delivery: Delivery
    ) -> None:
        async with self._store_turns:
            body = await self._store.body(tenant.name, endpoint.id, delivery.id)
        if body is None:
            self._keep(tenant, endpoint.id, replace(delivery, state=State.FAILED))
            return
        if delivery.attempts:
            self._metrics.webhook_retries.inc()
        started = time.perf_counter()
        outcome = await self._sender.send(endpoint.url, secret, delivery.id, body, int(time.time()))
        self._metrics.webhook_attempt_seconds.observe(time.perf_counter() - started)
        if outcome.gone:
            await self._gone(tenant, endpoint)
            return
        after = self._after(delivery, outcome, now_ms())
        if after.state is not State.PENDING:
            self._metrics.webhook_deliveries.labels(after.state.value).inc()
        self._keep(tenant, endpoint.id, after)
        async with self._store_turns:
            await self._store.settle(tenant.name, endpoint.id, after)

    def _after(self, delivery: Delivery, outcome: Outcome, now: int) -> Delivery:
        """What an attempt makes of a message: delivered, tried again later, or failed once
        it has been retried for `retry_hours`."""
        attempts = delivery.attempts + 1
        tried = replace(delivery, attempts=attempts, status=outcome.status, error=outcome.error)
        if outcome.delivered:
            return replace(tried, state=State.DELIVERED, next=None)
        if now - delivery.created >= self._timing.retry_hours * 3_600_000:
            return replace(tried, state=State.FAILED, next=None)
        wait = retry_delay(attempts, self._timing.retry_base, outcome.retry_after)
        return replace(tried, next=now + int(wait * 1000))

    def _keep(self, tenant: _Tenant, endpoint_id: str, delivery: Delivery) -> None:
        """Take an attempt's result into the endpoint's queue: a pending message stays in
        its place, a finished one leaves."""
        line = tenant.lines.get(endpoint_id)
        if line is None or delivery.id not in line.queue:
            return
        if delivery.state is State.PENDING:
            line.queue[delivery.id] = delivery
        else:
            del line.queue[delivery.id]
        line.dirty = True

    async def _gone(self, tenant: _Tenant, endpoint: Endpoint) -> None:
        """The receiver answered 410: the endpoint is removed, with its messages."""
        self._metrics.webhook_deliveries.labels("gone").inc()
        decision(
            log,
            "webhook_gone",
            "a webhook endpoint answered 410 Gone: removed",
            tenant=tenant.name,
            endpoint=endpoint.id,
            url=endpoint.url,
        )
        tenant.lines.pop(endpoint.id, None)
        async with self._store_turns:
            await self._store.remove(tenant.name, endpoint.id)
