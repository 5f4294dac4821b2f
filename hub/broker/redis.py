"""The Redis broker: nodes meet on one pub/sub channel per room.

Each shard (one Redis, or each master of a cluster) carries this node's rooms on it over
one subscriber connection (`hub.broker.subscriber`); a supervisor keeps one for every
shard the cluster has, and learns the shards again when one fails or a slot moves. A
channel lost on the way is reported to the node, whose members of that room then resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from hub.backoff import Backoff
from hub.broker import scripts
from hub.broker.base import (
    Broker,
    BrokerUnavailable,
    Claim,
    Deliver,
    HistoryPage,
    IdempotencyConflict,
    Lost,
    Outgoing,
    Receipt,
    Replay,
    Sent,
)
from hub.broker.clients import Clients
from hub.broker.subscriber import PLAIN, SHARDED, Subscriber
from hub.envelope import ID_END
from hub.history import LAST_ID, Retention, TenantBounds, parse_id
from hub.logs import decision
from hub.metrics import Metrics
from hub.outage import Outage
from hub.rooms import RoomKey, tag
from hub.tasks import cancel

log = logging.getLogger("hub.broker")

CHANNEL_PREFIX = scripts.CHANNEL_PREFIX.encode()
SHARDS_INTERVAL = 60.0
"""How often a cluster's shards are looked at again anyway: a failover or a slot move is
noticed at once, by the subscriber that loses its connection or its channels."""
UNAVAILABLE_INTERVAL = 1.0
"""How often the shards are looked at again while one does not answer."""
CANARY_INTERVAL = 2.0
"""How often each subscriber's canary is published."""
CANARY_DEAF = 6.0
"""A subscriber that has not heard a canary published this long ago is deaf."""


_Args = list[bytes | str | int | float]
"""One call of a script."""


@dataclass(frozen=True, slots=True)
class _Call:
    """One script call waiting in the outbox, and how its reply resolves its future."""

    script: AsyncScript
    slot: str
    """A key of the slot the script works in, for a cluster to route it by."""
    args: _Args
    future: asyncio.Future[Any]
    settle: Callable[[asyncio.Future[Any], Any], None]


def channel_of(key: RoomKey) -> bytes:
    return CHANNEL_PREFIX + key.name.encode()


def claim_arg(claim: Claim | None) -> str:
    """The publish script's claim argument: '' for none."""
    if claim is None:
        return ""
    return f"{claim.ttl_ms} {claim.ts} {claim.digest} {claim.key}"


def replay_of(verdict: str) -> Replay:
    """The script's `replay <ts> <ids>`: the answer the key's first publish stored."""
    _, ts, ids = verdict.split(" ")
    return Replay([event_id or None for event_id in ids.split(",")], int(ts))


def _stored(future: asyncio.Future[bool], result: Any) -> None:
    future.set_result(result == 1)


def new_epoch() -> str:
    """A fresh history epoch, used by a script only where a room's history has none."""
    return uuid.uuid4().hex[:12]


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
        self._name = name
        """This node process's own name, for its canary channels."""
        self._metrics = metrics
        self._bounds = bounds
        self._state_ttl_ms = state_ttl_ms
        self.outage = outage
        """Where this node's parts report what they find of Redis."""
        self.client = clients.writes
        """Writes: publishes and presence, never queued behind readers."""
        self.reader = clients.reads
        """Reads for clients (history, presence, figures), from a bounded pool."""
        sharded = clients.sharded
        self._verbs = SHARDED if sharded else PLAIN
        register = self.client.register_script
        self._publish = register(scripts.dialect(scripts.PUBLISH, sharded))
        self._receipt = register(scripts.dialect(scripts.RECEIPT, sharded))
        self._history = self.reader.register_script(scripts.HISTORY)
        self._deliver: Deliver | None = None
        self._lost: Lost | None = None
        self._wanted: dict[bytes, RoomKey] = {}
        """Channels this node carries, to the room each is for."""
        self._homes: dict[bytes, Subscriber] = {}
        """Which subscriber carries each channel."""
        self._subscribers: dict[str, Subscriber] = {}
        self._shards_changed = asyncio.Event()
        self._outbox: list[_Call] = []
        self._outbox_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(self, deliver: Deliver, lost: Lost) -> None:
        self._deliver = deliver
        self._lost = lost
        self._tasks = [
            asyncio.create_task(self._keep_shards(), name="redis-shards"),
            asyncio.create_task(self._send_outbox(), name="redis-publish"),
            asyncio.create_task(self._keep_canaries(), name="redis-canaries"),
        ]

    async def disconnect(self) -> None:
        await cancel(self._tasks)
        for subscriber in list(self._subscribers.values()):
            await subscriber.stop()
        await self._clients.close()

    @property
    def available(self) -> bool:
        subscribers = self._subscribers.values()
        return bool(subscribers) and all(subscriber.available for subscriber in subscribers)

    async def subscribe(self, key: RoomKey) -> None:
        channel = channel_of(key)
        subscriber = self._subscribers.get(self._shard_of(channel))
        if subscriber is None or not subscriber.available:
            raise BrokerUnavailable("redis is unreachable")
        self._wanted[channel] = key
        self._homes[channel] = subscriber
        try:
            await subscriber.subscribe(channel)
        except BrokerUnavailable:
            if self._homes.get(channel) is subscriber and channel not in subscriber.channels:
                self._forget(channel)
            self._shards_changed.set()
            raise

    def _shard_of(self, channel: bytes) -> str:
        try:
            return self._clients.shard_of(channel)
        except (RedisError, OSError, KeyError, IndexError) as error:
            raise BrokerUnavailable(f"redis cluster slots unknown: {error}") from error

    async def unsubscribe(self, key: RoomKey) -> None:
        channel = channel_of(key)
        subscriber = self._forget(channel)
        if subscriber is not None:
            subscriber.unsubscribe(channel)

    def _forget(self, channel: bytes) -> Subscriber | None:
        self._wanted.pop(channel, None)
        return self._homes.pop(channel, None)

    def _dropped(self, channels: list[bytes]) -> None:
        """Channels a subscriber stopped carrying unasked: their rooms' members resume."""
        keys = [key for channel in channels if (key := self._wanted.get(channel)) is not None]
        for channel in channels:
            self._forget(channel)
        self._shards_changed.set()
        if keys and self._lost is not None:
            decision(
                log,
                "subscriptions_lost",
                "redis lost room subscriptions: their members resume",
                logging.WARNING,
                rooms=len(keys),
            )
            self._lost(keys)

    async def _keep_shards(self) -> None:
        """Keep one subscriber for every shard, learning the shards again whenever one
        fails or moves a slot, and every `SHARDS_INTERVAL` anyway. A cluster client is
        initialised here, once, before any command: one initialised lazily by many
        commands at once resets the connections they are using."""
        backoff = Backoff(base=0.1, cap=5.0)
        started = False
        while True:
            try:
                if started:
                    await self._clients.refresh()
                else:
                    await self._clients.start()
                    started = True
                shards = self._clients.shards()
            except (RedisError, OSError) as error:
                self.outage.failed("cluster slots", error)
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            for shard in set(self._subscribers) - set(shards):
                await self._subscribers.pop(shard).stop()
            for shard in shards:
                if shard not in self._subscribers:
                    self._subscribers[shard] = subscriber = self._subscriber(shard)
                    subscriber.start()
            self._shards_changed.clear()
            # A shard that does not answer may be a master that failed: look again soon,
            # for the replica that takes its place.
            interval = SHARDS_INTERVAL if self.available else UNAVAILABLE_INTERVAL
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._shards_changed.wait(), interval)

    async def _keep_canaries(self) -> None:
        """Every `CANARY_INTERVAL`, publish each subscriber's canary; rebuild one that has
        not heard a canary published over `CANARY_DEAF` seconds ago (its connection answers
        pings yet carries nothing), and keep each one's round trip as a metric."""
        unanswered: dict[Subscriber, float] = {}
        """For each subscriber, when its oldest canary not yet heard went out."""
        while True:
            await asyncio.sleep(CANARY_INTERVAL)
            for subscriber in list(self._subscribers.values()):
                if not subscriber.connected:
                    unanswered.pop(subscriber, None)
                    continue
                sent = unanswered.get(subscriber)
                if sent is not None and subscriber.heard_since(sent):
                    del unanswered[subscriber]
                    shard = subscriber.shard or "redis"
                    self._metrics.canary_round_trip.labels(shard).set(subscriber.round_trip or 0)
                elif sent is not None and time.monotonic() - sent > CANARY_DEAF:
                    del unanswered[subscriber]
                    decision(
                        log,
                        "subscriber_deaf",
                        "a redis subscriber heard no canary: rebuilding it",
                        logging.WARNING,
                        shard=subscriber.shard or "redis",
                        seconds=CANARY_DEAF,
                    )
                    self._metrics.deaf_subscribers.inc()
                    subscriber.deafened()
                    continue
                now = time.monotonic()
                try:
                    await self.client.execute_command(
                        self._verbs.publish, subscriber.canary, repr(now)
                    )
                except (RedisError, OSError):
                    continue  # not the subscriber's fault: the outage is told by the writers
                unanswered.setdefault(subscriber, now)

    def _subscriber(self, shard: str) -> Subscriber:
        assert self._deliver is not None
        clients, name = self._clients, self._name
        return Subscriber(
            shard,
            lambda: clients.channel_on(shard, name),
            lambda: clients.connection(shard),
            self._verbs,
            self._wanted,
            self._deliver,
            self._dropped,
            self.outage,
        )

    def publish_soon(
        self, messages: Sequence[Outgoing], claim: Claim | None = None, trace: bytes = b""
    ) -> asyncio.Future[Sent]:
        if not self.available:
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
        return self._send(self._publish, tag(tenant), args, self._published)

    def receipt_soon(self, receipt: Receipt) -> asyncio.Future[bool]:
        if not self.available:
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
        return self._send(self._receipt, tag(receipt.key.tenant), args, _stored)

    def _send(
        self,
        script: AsyncScript,
        slot: str,
        args: _Args,
        settle: Callable[[asyncio.Future[Any], Any], None],
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._outbox.append(_Call(script, slot, args, future, settle))
        self._outbox_ready.set()
        return future

    async def _send_outbox(self) -> None:
        """Send the calls queued meanwhile (publishes, receipts) in one pipeline, in order:
        one round trip for all of them, however many sockets and requests they came from."""
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            batch, self._outbox = self._outbox, []
            try:
                results = await self._call(batch)
            except Exception as error:
                # Whatever went wrong, these calls fail and the next ones are sent: a
                # writer that died would leave every publish of the node waiting forever.
                if isinstance(error, RedisError | OSError):
                    self.outage.failed("publish", error)
                else:
                    log.exception("redis publish failed")
                results = [error] * len(batch)
            for call, result in zip(batch, results, strict=True):
                if call.future.done():
                    continue
                if isinstance(result, Exception):
                    call.future.set_exception(BrokerUnavailable(f"redis publish failed: {result}"))
                else:
                    call.settle(call.future, result)

    def _published(self, published: asyncio.Future[Sent], result: Any) -> None:
        """Resolve a publish: its ids, or the word the script answered instead."""
        if not isinstance(result, bytes):
            published.set_result([event_id.decode() if event_id else None for event_id in result])
            return
        verdict = result.decode()
        if verdict.startswith(scripts.REPLAY):
            published.set_result(replay_of(verdict))
        elif verdict == scripts.CONFLICT:
            published.set_exception(IdempotencyConflict())
        else:
            published.set_exception(self._bounds.refusal(verdict))

    async def _call(self, batch: list[_Call]) -> list[Any]:
        """One pipeline of script calls; those Redis answers NOSCRIPT (it lost the scripts:
        a restart) are sent once more after loading their scripts again."""
        results = await self._pipeline(batch)
        lost = [at for at, result in enumerate(results) if isinstance(result, NoScriptError)]
        if lost:
            for script in {id(batch[at].script): batch[at].script for at in lost}.values():
                await self.client.script_load(script.script)
            again = await self._pipeline([batch[at] for at in lost])
            for at, result in zip(lost, again, strict=True):
                results[at] = result
        return results

    async def _pipeline(self, batch: list[_Call]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for call in batch:
            pipe.execute_command("EVALSHA", call.script.sha, 1, call.slot, *call.args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    async def receipts(self, key: RoomKey, event_id: str) -> list[bytes]:
        if not self.available:
            raise BrokerUnavailable("redis is unreachable")
        try:
            records: list[bytes] = await self.reader.hvals(  # type: ignore[assignment]
                f"{scripts.RECEIPTS_PREFIX}{key.name}:{event_id}"
            )
        except (RedisError, OSError) as error:
            raise BrokerUnavailable(f"redis receipts read failed: {error}") from error
        return records

    async def history(
        self,
        key: RoomKey,
        since: str | None,
        limit: int,
        _retention: Retention,
        *,
        state: bool = False,
    ) -> HistoryPage:
        """Retention is applied by publishes (trimming) and by the keys' expiry."""
        if not self.available:
            raise BrokerUnavailable("redis is unreachable")
        if since == LAST_ID:
            limit = 0  # Redis refuses a range that starts after the largest id
        try:
            epoch, trimmed, last, events, kept, held = await self._history(
                keys=[tag(key.tenant)],
                args=[key.name, new_epoch(), since or "", limit, "1" if state else ""],
            )
        except (RedisError, OSError) as error:
            raise BrokerUnavailable(f"redis history read failed: {error}") from error
        return HistoryPage(
            epoch=epoch.decode(),
            events=[event + ID_END for event in events],
            last=last.decode() if last else None,
            trimmed=parse_id(trimmed.decode()) or (0, 0),
            state=kept,
            held=held == 1,
        )

    async def states(self, keys: Sequence[RoomKey]) -> list[list[bytes]]:
        if not self.available:
            raise BrokerUnavailable("redis is unreachable")
        pipe = self.reader.pipeline(transaction=False)
        for key in keys:
            pipe.hvals(scripts.STATE_PREFIX + key.name)
        try:
            kept: list[list[bytes]] = await pipe.execute()
        except (RedisError, OSError) as error:
            raise BrokerUnavailable(f"redis state read failed: {error}") from error
        return kept
