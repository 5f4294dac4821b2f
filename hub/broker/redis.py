"""The Redis broker: nodes meet on one pub/sub channel per room (`hub.broker.shards`), and
each room's history is a stream that a Lua script appends to as it publishes
(`hub.broker.scripts`), sent through the broker's outbox (`hub.broker.outbox`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from hub.broker import scripts
from hub.broker.base import (
    Accepted,
    Broker,
    Claim,
    Deliver,
    HistoryPage,
    IdempotencyConflict,
    Lost,
    Outgoing,
    OutgoingReceipt,
    Replay,
    Sent,
)
from hub.broker.outbox import Outbox
from hub.broker.shards import Shards
from hub.envelope import ID_END
from hub.errors import BrokerUnavailable
from hub.history import LAST_ID, Retention, TenantBounds, parse_id
from hub.metrics import Metrics
from hub.outage import Outage
from hub.redis.clients import Clients
from hub.redis.failures import unavailable
from hub.redis.scripts import new_epoch, register
from hub.rooms import RoomKey, tag
from hub.tasks import cancel

_Args = list[bytes | str | int | float]
"""One call of a script."""


def claim_arg(claim: Claim | None) -> str:
    """The publish script's claim argument: '' for none."""
    if claim is None:
        return ""
    return f"{claim.ttl_ms} {claim.ts} {claim.digest} {claim.key}"


def replay_of(verdict: str) -> Replay:
    """The script's `replay <ts> <ids> <reach>`: the answer the key's first publish stored
    (with no reach, counted as 0, when a node that did not count it stored it)."""
    _, ts, ids, reach = verdict.split(" ")
    rooms = [event_id or None for event_id in ids.split(",")]
    counted = [int(count) for count in reach.split(",")] if reach else [0] * len(rooms)
    return Replay(rooms, int(ts), counted)


def _stored(future: asyncio.Future[bool], result: Any) -> None:
    future.set_result(result == 1)


class RedisBroker(Broker):
    """Carries events between nodes through Redis pub/sub, and keeps history in streams."""

    def __init__(
        self,
        clients: Clients,
        bounds: TenantBounds,
        state_ttl_ms: int,
        outage: Outage,
        name: str,
        metrics: Metrics,
    ) -> None:
        self._clients = clients
        self._bounds = bounds
        self._state_ttl_ms = state_ttl_ms
        self.outage = outage
        """Where this node's parts report what they find of Redis."""
        self.client = clients.writes
        """Writes: publishes and presence, never queued behind readers."""
        self.reader = clients.reads
        """Reads for clients (history, presence, figures), from a bounded pool."""
        sharded = clients.sharded
        self._publish = register(self.client, scripts.PUBLISH, sharded)
        self._receipt = register(self.client, scripts.RECEIPT, sharded)
        self._history = register(self.reader, scripts.HISTORY, sharded)
        self._shards = Shards(clients, name, outage, metrics)
        self._outbox = Outbox(self.client, outage)
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(self, deliver: Deliver, lost: Lost) -> None:
        self._shards.start(deliver, lost)
        self._tasks = [asyncio.create_task(self._outbox.run(), name="redis-publish")]

    async def disconnect(self) -> None:
        await cancel(self._tasks)
        await self._shards.stop()
        await self._clients.close()

    @property
    def available(self) -> bool:
        return self._shards.available

    async def subscribe(self, key: RoomKey) -> None:
        await self._shards.subscribe(key)

    async def unsubscribe(self, key: RoomKey) -> None:
        self._shards.unsubscribe(key)

    def publish_soon(
        self, messages: Sequence[Outgoing], claim: Claim | None = None, trace: bytes = b""
    ) -> asyncio.Future[Sent]:
        if not self._shards.available:
            raise BrokerUnavailable("redis is unreachable")
        bounds = self._bounds
        tenant = messages[0].key.tenant
        args: _Args = [
            new_epoch(),
            tenant,
            bounds.publish_bytes,
            bounds.publish_burst,
            bounds.history_rooms,
            claim_arg(claim),
            self._state_ttl_ms,
            trace,
        ]
        for message in messages:
            retention = message.retention
            args += [
                message.key.name,
                message.prefix,
                message.suffix,
                retention.size,
                retention.ttl_ms,
                message.state or "",
            ]
        return self._outbox.send(self._publish, tag(tenant), args, self._published)

    def _published(self, published: asyncio.Future[Sent], result: Any) -> None:
        """Resolve a publish: its ids, or the word the script answered instead."""
        if not isinstance(result, bytes):
            rooms = len(result) // 2
            ids = [event_id.decode() if event_id else None for event_id in result[:rooms]]
            published.set_result(Accepted(ids, result[rooms:]))
            return
        verdict = result.decode()
        if verdict.startswith(scripts.REPLAY):
            published.set_result(replay_of(verdict))
        elif verdict == scripts.CONFLICT:
            published.set_exception(IdempotencyConflict())
        else:
            published.set_exception(self._bounds.refusal(verdict))

    def receipt_soon(self, receipt: OutgoingReceipt) -> asyncio.Future[bool]:
        if not self._shards.available:
            raise BrokerUnavailable("redis is unreachable")
        status = receipt.announce
        args: _Args = [
            new_epoch(),
            receipt.key.name,
            receipt.event_id,
            receipt.ttl_ms,
            receipt.principal,
            receipt.record,
            status.key.name,
            status.retention.size,
            status.retention.ttl_ms,
            status.prefix,
            status.suffix,
        ]
        return self._outbox.send(self._receipt, tag(receipt.key.tenant), args, _stored)

    async def receipts(self, key: RoomKey, event_id: str) -> list[bytes]:
        if not self._shards.available:
            raise BrokerUnavailable("redis is unreachable")
        with unavailable("redis receipts read failed"):
            records: list[bytes] = await self.reader.hvals(  # type: ignore[assignment]
                f"{scripts.RECEIPTS_PREFIX}{key.name}:{event_id}"
            )
        return records

    async def history(
        self,
        key: RoomKey,
        since: str | None,
        limit: int,
        retention: Retention,
        *,
        state: bool = False,
    ) -> HistoryPage:
        """Publishes trim what retention drops, and keys expire; a read leaves out what
        aged past the TTL since the room's last publish."""
        if not self._shards.available:
            raise BrokerUnavailable("redis is unreachable")
        if since == LAST_ID:
            limit = 0  # Redis refuses a range that starts after the largest id
        with unavailable("redis history read failed"):
            epoch, trimmed, last, events, kept, held = await self._history(
                keys=[tag(key.tenant)],
                args=[
                    key.name,
                    new_epoch(),
                    since or "",
                    limit,
                    "1" if state else "",
                    retention.ttl_ms,
                ],
            )
        return HistoryPage(
            epoch=epoch.decode(),
            events=[event + ID_END for event in events],
            last=last.decode() if last else None,
            trimmed=parse_id(trimmed.decode()) or (0, 0),
            state=kept,
            held=held == 1,
        )

    async def states(self, keys: Sequence[RoomKey]) -> list[list[bytes]]:
        if not self._shards.available:
            raise BrokerUnavailable("redis is unreachable")
        pipe = self.reader.pipeline(transaction=False)
        for key in keys:
            pipe.hvals(scripts.STATE_PREFIX + key.name)
        with unavailable("redis state read failed"):
            kept: list[list[bytes]] = await pipe.execute()
        return kept
