"""Webhooks of a node alone: endpoints and messages in this process, fed by the in-process
broker as it publishes each tenant's `status` events. What is pending is lost when the node
stops."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field, replace

from hub.auth import STATUS_ROOM
from hub.broker.memory import MemoryBroker
from hub.envelope import id_of
from hub.history import format_id
from hub.rooms import RoomKey
from hub.webhooks.model import (
    OFFLINE,
    ONLINE,
    Delivery,
    Endpoint,
    Message,
    State,
    first_delivery,
    message_of,
)
from hub.webhooks.store import KEEP_FINISHED, Held, Polled, Store

LEASE = 10.0
"""How often the dispatcher looks again at which tenants have endpoints."""
MAX_FRESH = 10_000
"""Changes kept for the dispatcher between two polls; past them it loads the tenant again."""


@dataclass(slots=True)
class _Line:
    """One endpoint and its messages."""

    endpoint: Endpoint
    sealed: str
    pending: dict[str, Delivery] = field(default_factory=dict)
    """By webhook id, in `seq` order."""
    finished: dict[str, Delivery] = field(default_factory=dict)
    bodies: dict[str, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class _Tenant:
    lines: dict[str, _Line] = field(default_factory=dict)
    seq: int = 0
    gone: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Device to the time and webhook id of its `device.offline` not yet followed by a
    `device.online`."""
    fresh: Polled = field(default_factory=Polled)


class MemoryStore(Store):
    """Keeps every tenant's webhooks in this process; this node delivers them all."""

    lease = LEASE

    def __init__(self, broker: MemoryBroker, max_pending: int, grace: float) -> None:
        self._broker = broker
        self._most = max_pending
        self._grace_ms = int(grace * 1000)
        self._tenants: dict[str, _Tenant] = {}
        self._unnumbered = itertools.count(1)

    async def start(self) -> None:
        self._broker.tap(STATUS_ROOM, self._heard)

    async def stop(self) -> None:
        self._broker.tap(STATUS_ROOM, None)

    async def add(self, tenant: str, endpoint: Endpoint, sealed: str, most: int) -> bool:
        kept = self._tenants.setdefault(tenant, _Tenant())
        if len(kept.lines) >= most:
            return False
        kept.lines[endpoint.id] = _Line(endpoint, sealed)
        kept.fresh.reload = True
        return True

    async def endpoints(self, tenant: str) -> list[Endpoint]:
        kept = self._tenants.get(tenant)
        return [] if kept is None else [line.endpoint for line in kept.lines.values()]

    async def remove(self, tenant: str, endpoint_id: str) -> bool:
        kept = self._tenants.get(tenant)
        if kept is None or kept.lines.pop(endpoint_id, None) is None:
            return False
        if not kept.lines:
            del self._tenants[tenant]
        kept.fresh.reload = True
        return True

    async def deliveries(self, tenant: str, endpoint_id: str, limit: int) -> list[Delivery] | None:
        line = self._line(tenant, endpoint_id)
        if line is None:
            return None
        every = [*line.pending.values(), *line.finished.values()]
        return sorted(every, key=lambda delivery: -delivery.seq)[: max(limit, 0)]

    async def retry(self, tenant: str, endpoint_id: str, webhook_id: str, now: int) -> bool:
        line = self._line(tenant, endpoint_id)
        if line is None:
            return False
        earlier = line.pending.get(webhook_id) or line.finished.pop(webhook_id, None)
        if earlier is None:
            return False
        line.pending[webhook_id] = replace(earlier, state=State.PENDING, next=now)
        line.pending = dict(sorted(line.pending.items(), key=lambda item: item[1].seq))
        self._tenants[tenant].fresh.reload = True
        return True

    async def share(self) -> tuple[list[str], int]:
        return list(self._tenants), 1

    async def acquire(self, tenants: list[str]) -> list[str]:
        return [tenant for tenant in tenants if tenant in self._tenants]

    async def renew(self, tenants: list[str]) -> list[str]:
        return tenants

    async def release(self, tenants: list[str]) -> None:
        """Nothing to give up: no other node."""

    async def load(self, tenant: str) -> Held:
        kept = self._tenants.get(tenant)
        if kept is None:
            return Held([], {})
        kept.fresh = Polled()
        return Held(
            [(line.endpoint, line.sealed) for line in kept.lines.values()],
            {key: list(line.pending.values()) for key, line in kept.lines.items()},
        )

    async def poll(self, tenants: list[str], now: int) -> dict[str, Polled]:  # noqa: ARG002
        """What the broker handed over since the last poll (events are taken as they are
        published, at `_heard`)."""
        polled: dict[str, Polled] = {}
        for tenant in tenants:
            kept = self._tenants.get(tenant)
            if kept is None:
                polled[tenant] = Polled(held=False)
            else:
                polled[tenant], kept.fresh = kept.fresh, Polled()
        return polled

    async def body(self, tenant: str, endpoint_id: str, webhook_id: str) -> bytes | None:
        line = self._line(tenant, endpoint_id)
        return None if line is None else line.bodies.get(webhook_id)

    async def settle(self, tenant: str, endpoint_id: str, delivery: Delivery) -> None:
        line = self._line(tenant, endpoint_id)
        if line is None:
            return
        if delivery.state is State.PENDING:
            if delivery.id in line.pending:
                line.pending[delivery.id] = delivery
        elif delivery.id in line.pending or delivery.id in line.finished:
            self._finish(line, delivery)

    def _line(self, tenant: str, endpoint_id: str) -> _Line | None:
        kept = self._tenants.get(tenant)
        return None if kept is None else kept.lines.get(endpoint_id)

    def _heard(self, key: RoomKey, event: bytes) -> None:
        """A `status` event as the broker publishes it."""
        kept = self._tenants.get(key.tenant)
        if kept is None:
            return
        try:
            entry = format_id(id_of(event))
        except ValueError:  # a `status` room that keeps no history gives no id
            entry = f"0-{next(self._unnumbered)}"
        message = message_of(key.tenant, entry, event)
        if message is not None:
            self._take(kept, message, int(time.time() * 1000))

    def _take(self, kept: _Tenant, message: Message, now: int) -> None:
        """Make `message` pending for every endpoint that hears about it. A device back
        online within the grace of its offline takes the offline back where it is unsent,
        and its online goes only where the offline went."""
        back_from: str | None = None
        if message.type == OFFLINE:
            self._remember(kept, message)
        elif message.type == ONLINE:
            seen = kept.gone.pop(message.device, None)
            if seen is not None and message.time - seen[0] <= self._grace_ms:
                back_from = seen[1]
        for line in kept.lines.values():
            if back_from is not None and not self._told(kept, line, back_from):
                continue
            if message.type in line.endpoint.events:
                self._add(kept, line, message, now)
        if len(kept.fresh.added) > MAX_FRESH:
            kept.fresh = Polled(reload=True)

    def _remember(self, kept: _Tenant, message: Message) -> None:
        """Keep the device's offline for the grace, and forget those past it: `gone` is in
        the order they went, so the past ones are at its front, each looked at once."""
        gone = kept.gone
        gone.pop(message.device, None)
        gone[message.device] = (message.time, message.id)
        oldest = message.time - self._grace_ms
        while (first := next(iter(gone))) != message.device and gone[first][0] < oldest:
            del gone[first]

    def _told(self, kept: _Tenant, line: _Line, offline: str) -> bool:
        """Whether the endpoint was sent the offline `offline`; one still unsent is taken
        back."""
        waiting = line.pending.get(offline)
        if waiting is not None and waiting.attempts == 0:
            del line.pending[offline]
            line.bodies.pop(offline, None)
            kept.fresh.dropped.append((line.endpoint.id, offline))
            return False
        return waiting is not None or offline in line.finished

    def _add(self, kept: _Tenant, line: _Line, message: Message, now: int) -> None:
        if message.id in line.pending or message.id in line.finished:
            return
        kept.seq += 1
        delivery = first_delivery(message, now, self._grace_ms, kept.seq)
        line.pending[message.id] = delivery
        line.bodies[message.id] = message.body
        kept.fresh.added.append((line.endpoint.id, delivery))
        if len(line.pending) > self._most:
            oldest = next(iter(line.pending.values()))
            error = f"backlog over {self._most}"
            self._finish(line, replace(oldest, state=State.FAILED, error=error, next=None))
            kept.fresh.failed.append((line.endpoint.id, oldest.id))

    @staticmethod
    def _finish(line: _Line, delivery: Delivery) -> None:
        """Move a delivered or failed message to the log, which keeps the newest."""
        line.pending.pop(delivery.id, None)
        line.finished[delivery.id] = delivery
        if len(line.finished) > KEEP_FINISHED:
            oldest = min(line.finished.values(), key=lambda kept: kept.seq)
            del line.finished[oldest.id]
            line.bodies.pop(oldest.id, None)
