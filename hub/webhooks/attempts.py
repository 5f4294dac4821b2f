"""One attempt at one message, whatever its tenant: its body read, the POST, what the answer
makes of the message, and that kept in the store.

One `Attempts` serves every tenant a node delivers for, so that what it bounds holds for
the node: the sends in flight (the `Sender`'s connections) and the store calls at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace

from hub.logs import decision
from hub.metrics import Metrics
from hub.protocol import now_ms
from hub.webhooks.model import Delivery, Endpoint, State
from hub.webhooks.sender import Outcome, Sender, retry_delay
from hub.webhooks.store import Store

log = logging.getLogger("hub.webhooks")

OVERALL = 64
"""Sends in flight at most on a node: the `Sender`'s connections."""
STORE_AT_ONCE = 2
"""Store calls (a body, an attempt's result) the sends make at once: the node's few Redis
write connections stay free for its publishes and presence."""
POLL_INTERVAL = 0.15
"""Seconds between two reads of the held tenants' new `status` events."""


@dataclass(frozen=True, slots=True)
class Timing:
    """When messages are tried again, and how often new ones are looked for."""

    retry_base: float
    """Seconds before the first retry; each next waits about twice as long."""
    retry_hours: float
    """A message still failing this long after it was taken has failed."""
    poll: float = POLL_INTERVAL


class Attempts:
    """Tries messages once each, for the tenants of this node, and keeps the results."""

    def __init__(self, store: Store, sender: Sender, timing: Timing, metrics: Metrics) -> None:
        self._store = store
        self._sender = sender
        self._timing = timing
        self._metrics = metrics
        self._store_turns = asyncio.Semaphore(STORE_AT_ONCE)
        self.flying = 0
        """Sends in flight on this node, of every tenant: each tenant counts its own in and
        out."""

    @property
    def full(self) -> bool:
        """Whether the node has its most sends in flight."""
        return self.flying >= OVERALL

    async def post(
        self, tenant: str, endpoint: Endpoint, secret: str, delivery: Delivery
    ) -> Outcome | None:
        """POST the message to the endpoint once; None, sending nothing, when the endpoint
        no longer has it."""
        async with self._store_turns:
            body = await self._store.body(tenant, endpoint.id, delivery.id)
        if body is None:
            return None
        if delivery.attempts:
            self._metrics.webhook_retries.inc()
        started = time.perf_counter()
        outcome = await self._sender.send(endpoint.url, secret, delivery.id, body, int(time.time()))
        self._metrics.webhook_attempt_seconds.observe(time.perf_counter() - started)
        return outcome

    def after(self, delivery: Delivery, outcome: Outcome) -> Delivery:
        """What an attempt makes of a message: delivered, tried again later, or failed once
        it has been retried for `retry_hours`."""
        now = now_ms()
        attempts = delivery.attempts + 1
        tried = replace(delivery, attempts=attempts, status=outcome.status, error=outcome.error)
        if outcome.delivered:
            state = State.DELIVERED
        elif now - delivery.created >= self._timing.retry_hours * 3_600_000:
            state = State.FAILED
        else:
            wait = retry_delay(attempts, self._timing.retry_base, outcome.retry_after)
            return replace(tried, next=now + int(wait * 1000))
        self._metrics.webhook_deliveries.labels(state.value).inc()
        return replace(tried, state=state, next=None)

    def later(self, delivery: Delivery) -> Delivery:
        """The message of an attempt that failed on this side (the store away), due again
        after the first retry's wait."""
        return replace(delivery, next=now_ms() + int(self._timing.retry_base * 1000))

    async def settle(self, tenant: str, endpoint_id: str, delivery: Delivery) -> None:
        async with self._store_turns:
            await self._store.settle(tenant, endpoint_id, delivery)

    async def gone(self, tenant: str, endpoint: Endpoint) -> None:
        """The receiver answered 410: the endpoint is removed, with its messages."""
        self._metrics.webhook_deliveries.labels("gone").inc()
        decision(
            log,
            "webhook_gone",
            "a webhook endpoint answered 410 Gone: removed",
            tenant=tenant,
            endpoint=endpoint.id,
            url=endpoint.url,
        )
        async with self._store_turns:
            await self._store.remove(tenant, endpoint.id)
