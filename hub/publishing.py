"""Publishing: an event encoded once per room and handed to the broker, with its
idempotency claim and its trace; and a receipt stored and announced in `status`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from hub import envelope
from hub.auth import STATUS_ROOM
from hub.broker import Broker, Outgoing
from hub.broker.base import Claim, IdempotencyConflict, OutgoingReceipt, Replay, Sent
from hub.config import Settings
from hub.errors import ErrorCode, HubError
from hub.history import RetentionRules, TenantLimited
from hub.metrics import Metrics
from hub.protocol import MAX_APPLY_AHEAD_MS, NO_TIMING, Timing
from hub.rooms import RoomKey
from hub.stats import Tally
from hub.tracing import UNTRACED, PublishTrace


@dataclass(frozen=True, slots=True)
class Published:
    """Where a publish went: each room's new id (None without history), and its time."""

    ids: dict[str, str | None]
    ts: int
    counts: Sequence[int]
    """How many sockets of the cluster were in each room as it was published, in the order
    of `ids`: a socket's publish never asks, so nothing more is built for it."""
    replayed: bool = False
    """Nothing was published now: this is the answer of the publish that claimed the
    same idempotency key first."""

    @property
    def reach(self) -> dict[str, int]:
        return dict(zip(self.ids, self.counts, strict=True))


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A request's `Idempotency-Key`, with the sha256 (hex) of the body it came with."""

    key: str
    digest: str


class Publisher:
    """Publishes events and receipts for this node's sockets and REST alike."""

    def __init__(
        self,
        settings: Settings,
        broker: Broker,
        retention: RetentionRules,
        metrics: Metrics,
        tally: Tally,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.retention = retention
        self.metrics = metrics
        self.tally = tally

    def receipt_soon(
        self,
        sub: str,
        role: str,
        key: RoomKey,
        event_id: str,
        status: str,
        data: dict[str, Any] | None,
    ) -> asyncio.Future[bool]:
        """Store a principal's receipt of an event and announce it as `delivery.receipt` in
        the tenant's `status` room; resolves to False, doing nothing, when the event is not
        (or no longer) in the room's history."""
        ts = int(time.time() * 1000)
        said: dict[str, Any] = {
            "sub": sub,
            "role": role,
            "room": key.room,
            "id": event_id,
            "status": status,
        }
        record: dict[str, Any] = {"sub": sub, "role": role, "status": status, "time": ts}
        if data is not None:
            said["data"] = record["data"] = data
        payload = envelope.encode(STATUS_ROOM, "delivery.receipt", said, ts)
        limit = self.settings.max_receipt_bytes
        if len(payload) > limit:
            raise HubError(ErrorCode.TOO_LARGE, f"receipt is {len(payload)} bytes, limit {limit}")
        status_key = RoomKey(key.tenant, STATUS_ROOM)
        announce = Outgoing.of(status_key, payload, self.retention.for_room(STATUS_ROOM))
        receipt = OutgoingReceipt(
            key,
            event_id,
            f"{role} {sub}",
            orjson.dumps(record),
            self.retention.for_room(key.room).ttl_ms,
            announce,
        )
        stored = self.broker.receipt_soon(receipt)
        counted = self.metrics.receipts.labels(status)

        def count(stored: asyncio.Future[bool]) -> None:
            if not stored.cancelled() and stored.exception() is None and stored.result():
                self.tally.messages_in += 1
                counted.inc()

        stored.add_done_callback(count)
        return stored

    def publish_soon(
        self,
        tenant: str,
        rooms: Sequence[str],
        event: str,
        data: Any,
        timing: Timing = NO_TIMING,
        idempotency: IdempotencyKey | None = None,
        trace: PublishTrace = UNTRACED,
    ) -> asyncio.Future[Published]:
        """Encode the event once per room and hand it to the broker now, for every room or
        for none; the future resolves once it is published. With an `idempotency` key,
        the tenant's first publish with it publishes, and later ones are answered as it
        was (see `Claim`), for `HUB_IDEMPOTENCY_TTL`. `trace` hears how it ended. An event
        with a `ttl` carries `expires`, and is no longer replayed, history or state after
        it."""
        ts = int(time.time() * 1000)
        state = event if self.settings.state.of(event) else None
        claim = None if idempotency is None else self._claim(idempotency, ts)
        try:
            messages = self._encoded(tenant, rooms, event, data, ts, state, timing)
            sent = self.broker.publish_soon(messages, claim, trace.carrier)
        except HubError as error:
            trace.failed(error)
            raise
        published: asyncio.Future[Published] = asyncio.get_running_loop().create_future()

        def done(sent: asyncio.Future[Sent]) -> None:
            """Count what the broker did, then answer, unless the caller went away."""
            answer: Published | BaseException
            error = sent.exception()
            if error is not None:
                if isinstance(error, TenantLimited):
                    self.metrics.tenant_limited.labels(error.bound).inc()
                answer = error
            elif isinstance(accepted := sent.result(), Replay):
                answer = self._replayed(rooms, accepted)
            else:
                if state is not None:
                    self.metrics.state_publishes.inc(len(messages))
                self.tally.messages_in += len(messages)
                self.tally.tenants_in[tenant] += len(messages)
                ids = dict(zip(rooms, accepted.ids, strict=True))
                answer = Published(ids, ts, accepted.reach)
            if trace is not UNTRACED:
                _tell(trace, answer)
            if published.cancelled():
                return
            if isinstance(answer, Published):
                published.set_result(answer)
            else:
                published.set_exception(answer)

        sent.add_done_callback(done)
        return published

    def _claim(self, idempotency: IdempotencyKey, ts: int) -> Claim:
        """What a publish with this key claims, for `HUB_IDEMPOTENCY_TTL`."""
        ttl_ms = max(1, int(self.settings.idempotency_ttl * 1000))
        return Claim(idempotency.key, idempotency.digest, ts, ttl_ms)

    def _encoded(
        self,
        tenant: str,
        rooms: Sequence[str],
        event: str,
        data: Any,
        ts: int,
        state: str | None,
        timing: Timing,
    ) -> list[Outgoing]:
        """The event encoded once per room, each within `HUB_MAX_EVENT_BYTES`."""
        limit = self.settings.max_event_bytes
        apply_at, ttl = timing.apply_at, timing.ttl
        if apply_at is not None and apply_at > ts + MAX_APPLY_AHEAD_MS:
            raise HubError(ErrorCode.BAD_REQUEST, "apply_at must be at most 24 h ahead")
        expires = None if ttl is None else ts + ttl * 1000
        messages = []
        for room in rooms:
            kept = self.retention.for_room(room)
            if ttl is not None and ttl * 1000 > kept.ttl_ms:
                raise HubError(
                    ErrorCode.BAD_REQUEST,
                    f"ttl must be at most the history TTL of {room} ({kept.ttl_ms // 1000} s)",
                )
            payload = envelope.encode(room, event, data, ts, apply_at, expires)
            if len(payload) > limit:
                raise HubError(ErrorCode.TOO_LARGE, f"event is {len(payload)} bytes, limit {limit}")
            key = RoomKey(tenant, room)
            messages.append(Outgoing.of(key, payload, kept, state))
        return messages

    def _replayed(self, rooms: Sequence[str], replay: Replay) -> Published | IdempotencyConflict:
        """The answer the first publish of an idempotency key got, for this publish."""
        if len(replay.ids) != len(rooms):  # a stored answer of another shape: not ours
            return IdempotencyConflict()
        self.metrics.idempotent_replays.inc()
        ids = dict(zip(rooms, replay.ids, strict=True))
        return Published(ids, replay.ts, replay.reach, replayed=True)


def _tell(trace: PublishTrace, answer: Published | BaseException) -> None:
    if isinstance(answer, Published):
        trace.published(answer.ids, answer.replayed)
    else:
        trace.failed(answer)
