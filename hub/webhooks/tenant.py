"""One tenant's messages on the node that delivers them: a line of pending messages per
endpoint, and the sends from those lines.

Every send is a task of its own, and nothing that reads Redis or serves sockets awaits
one: a slow or dead endpoint holds back only its own messages. An endpoint has at most
`PER_ENDPOINT` sends in flight, a tenant `PER_TENANT`, the node `OVERALL`; an endpoint's
messages go in order, those of different devices side by side, the next of a device only
once the one before it is delivered or failed.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass, field, replace

from hub.protocol import now_ms
from hub.webhooks.attempts import Attempts
from hub.webhooks.model import Delivery, Endpoint, State
from hub.webhooks.store import Polled

log = logging.getLogger("hub.webhooks")

PER_ENDPOINT = 4
PER_TENANT = 16
"""Sends in flight at most, to one endpoint and for one tenant (`OVERALL` bounds the node)."""
NEVER = sys.maxsize


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


class Tenant:
    """A tenant this node delivers for: its endpoints' lines and its sends in flight."""

    def __init__(self, name: str, attempts: Attempts) -> None:
        self.name = name
        self.loaded = False
        """Whether the lines are the store's: False until the first load, and once
        endpoints or messages changed other than by a read."""
        self._attempts = attempts
        self._lines: dict[str, _Line] = {}
        self._flying = 0
        self._sends: set[asyncio.Task[None]] = set()
        self._held = True

    def load(
        self, endpoints: list[tuple[Endpoint, str | None]], pending: dict[str, list[Delivery]]
    ) -> None:
        """Take the lines from the store: each endpoint with its opened secret, and its
        pending messages in order. Sends in flight keep their devices busy."""
        lines: dict[str, _Line] = {}
        for endpoint, secret in endpoints:
            queue = {delivery.id: delivery for delivery in pending.get(endpoint.id, [])}
            line = _Line(endpoint, secret, queue)
            earlier = self._lines.get(endpoint.id)
            if earlier is not None:
                line.busy, line.flying = earlier.busy, earlier.flying
            lines[endpoint.id] = line
        self._lines = lines
        self.loaded = True

    def take(self, polled: Polled) -> None:
        """Take one read's new, dropped and failed messages into the lines; a message for
        an endpoint not loaded yet makes the tenant load again."""
        for endpoint_id, delivery in polled.added:
            line = self._lines.get(endpoint_id)
            if line is None:
                self.loaded = False
                continue
            line.queue[delivery.id] = delivery
            line.dirty = True
        for endpoint_id, webhook_id in [*polled.dropped, *polled.failed]:
            line = self._lines.get(endpoint_id)
            if line is not None:
                line.queue.pop(webhook_id, None)

    def let_go(self) -> list[asyncio.Task[None]]:
        """This node no longer delivers for the tenant: nothing starts again. Its sends in
        flight, for the caller to cancel (the next holder sends them again)."""
        self._held = False
        return list(self._sends)

    def pending(self) -> int:
        return sum(len(line.queue) for line in self._lines.values())

    def oldest(self) -> int | None:
        """When (ms) the oldest pending message was taken; None when there is none."""
        return min(
            (
                next(iter(line.queue.values())).created
                for line in self._lines.values()
                if line.queue
            ),
            default=None,
        )

    def schedule(self, now: int) -> None:
        """Start what may go of the lines that changed or have a message due."""
        for line in self._lines.values():
            if line.dirty or line.wake <= now:
                self._schedule(line, now)

    def _schedule(self, line: _Line, now: int) -> None:
        """Start the endpoint's messages that may go: the first pending one of each device,
        once due, within the bounds."""
        seen: set[str] = set()
        wake = NEVER
        for delivery in line.queue.values():
            if len(line.flying) >= PER_ENDPOINT:
                break  # a send that ends schedules the line again
            if self._flying >= PER_TENANT or self._attempts.full:
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
            self._launch(line, line.secret, delivery)
        line.dirty = False
        line.wake = wake

    def _launch(self, line: _Line, secret: str, delivery: Delivery) -> None:
        line.flying.add(delivery.id)
        line.busy.add(delivery.device)
        self._flying += 1
        self._attempts.flying += 1
        task = asyncio.create_task(self._send(line, secret, delivery))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, line: _Line, secret: str, delivery: Delivery) -> None:
        endpoint = line.endpoint
        try:
            await self._attempt(endpoint, secret, delivery)
        except Exception as error:  # Redis away: try again later
            log.warning("webhook %s to %s: %s", delivery.id, endpoint.url, error)
            self._keep(endpoint.id, self._attempts.later(delivery))
        finally:
            line.flying.discard(delivery.id)
            line.busy.discard(delivery.device)
            self._flying -= 1
            self._attempts.flying -= 1
            if self._held:
                now = now_ms()
                for current in self._lines.values():
                    if current.endpoint.id == endpoint.id or current.dirty:
                        self._schedule(current, now)

    async def _attempt(self, endpoint: Endpoint, secret: str, delivery: Delivery) -> None:
        outcome = await self._attempts.post(self.name, endpoint, secret, delivery)
        if outcome is None:
            self._keep(endpoint.id, replace(delivery, state=State.FAILED))
            return
        if outcome.gone:
            self._lines.pop(endpoint.id, None)
            await self._attempts.gone(self.name, endpoint)
            return
        after = self._attempts.after(delivery, outcome)
        await self._attempts.settle(self.name, endpoint.id, after)  # kept only once stored
        self._keep(endpoint.id, after)

    def _keep(self, endpoint_id: str, delivery: Delivery) -> None:
        """Take an attempt's result into the endpoint's queue: a pending message stays in
        its place, a finished one leaves."""
        line = self._lines.get(endpoint_id)
        if line is None or delivery.id not in line.queue:
            return
        if delivery.state is State.PENDING:
            line.queue[delivery.id] = delivery
        else:
            del line.queue[delivery.id]
        line.dirty = True
