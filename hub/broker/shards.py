"""This node's room subscriptions through Redis: one subscriber connection
(`hub.broker.subscriber`) on each shard (one Redis, or each master of a cluster).

A supervisor keeps one subscriber for every shard the cluster has, and learns the shards
again when one fails or a slot moves. Each subscriber also hears a canary channel of its
own, published here every few seconds: one that stops hearing it is rebuilt. A channel
lost on the way is reported to the node, whose members of that room then resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from hub.backoff import reconnect_backoff
from hub.broker import scripts
from hub.broker.base import Deliver, Lost
from hub.broker.subscriber import PLAIN, SHARDED, Subscriber
from hub.errors import BrokerUnavailable
from hub.logs import decision
from hub.metrics import Metrics
from hub.outage import Outage
from hub.redis.clients import Clients
from hub.redis.failures import FAILURES, unavailable
from hub.rooms import RoomKey
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


def channel_of(key: RoomKey) -> bytes:
    return CHANNEL_PREFIX + key.name.encode()


class Shards:
    """The subscribers, one per shard, and which of them carries each room's channel."""

    def __init__(self, clients: Clients, name: str, outage: Outage, metrics: Metrics) -> None:
        self._clients = clients
        self._name = name
        """This node process's own name, for its canary channels."""
        self._outage = outage
        self._metrics = metrics
        self._verbs = SHARDED if clients.sharded else PLAIN
        self._deliver: Deliver | None = None
        self._lost: Lost | None = None
        self._wanted: dict[bytes, RoomKey] = {}
        """Channels this node carries, to the room each is for."""
        self._homes: dict[bytes, Subscriber] = {}
        """Which subscriber carries each channel."""
        self._subscribers: dict[str, Subscriber] = {}
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, deliver: Deliver, lost: Lost) -> None:
        self._deliver = deliver
        self._lost = lost
        self._tasks = [
            asyncio.create_task(self._keep(), name="redis-shards"),
            asyncio.create_task(self._keep_canaries(), name="redis-canaries"),
        ]

    async def stop(self) -> None:
        """Stop for good: the rooms it carried end with it, asked, so none is told lost."""
        self._lost = None
        await cancel(self._tasks)
        for subscriber in list(self._subscribers.values()):
            await subscriber.stop()

    @property
    def available(self) -> bool:
        subscribers = self._subscribers.values()
        return bool(subscribers) and all(subscriber.available for subscriber in subscribers)

    async def subscribe(self, key: RoomKey) -> None:
        channel = channel_of(key)
        with unavailable("redis cluster slots unknown", KeyError, IndexError):
            shard = self._clients.shard_of(channel)
        subscriber = self._subscribers.get(shard)
        if subscriber is None or not subscriber.available:
            raise BrokerUnavailable("redis is unreachable")
        self._wanted[channel] = key
        self._homes[channel] = subscriber
        try:
            await subscriber.subscribe(channel)
        except BrokerUnavailable:
            if self._homes.get(channel) is subscriber and channel not in subscriber.channels:
                self._forget(channel)
            self._changed.set()
            raise

    def unsubscribe(self, key: RoomKey) -> None:
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
        self._changed.set()
        if keys and self._lost is not None:
            decision(
                log,
                "subscriptions_lost",
                "redis lost room subscriptions: their members resume",
                logging.WARNING,
                rooms=len(keys),
            )
            self._lost(keys)

    async def _keep(self) -> None:
        """Keep one subscriber for every shard, learning the shards again whenever one
        fails or moves a slot, and every `SHARDS_INTERVAL` anyway. A cluster client is
        initialised here, once, before any command: one initialised lazily by many
        commands at once resets the connections they are using."""
        backoff = reconnect_backoff()
        started = False
        while True:
            try:
                if started:
                    await self._clients.refresh()
                else:
                    await self._clients.start()
                    started = True
                shards = self._clients.shards()
            except FAILURES as error:
                self._outage.failed("cluster slots", error)
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            for shard in set(self._subscribers) - set(shards):
                await self._subscribers.pop(shard).stop()
            for shard in shards:
                if shard not in self._subscribers:
                    self._subscribers[shard] = subscriber = self._subscriber(shard)
                    subscriber.start()
            self._changed.clear()
            # A shard that does not answer may be a master that failed: look again soon,
            # for the replica that takes its place.
            interval = SHARDS_INTERVAL if self.available else UNAVAILABLE_INTERVAL
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), interval)

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
                    self._deafened(subscriber)
                    continue
                now = time.monotonic()
                try:
                    await self._clients.writes.execute_command(
                        self._verbs.publish, subscriber.canary, repr(now)
                    )
                except FAILURES:
                    continue  # not the subscriber's fault: the outage is told by the writers
                unanswered.setdefault(subscriber, now)

    def _deafened(self, subscriber: Subscriber) -> None:
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
            self._outage,
        )
