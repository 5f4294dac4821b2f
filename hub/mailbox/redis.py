"""The mailbox of a cluster's node, through Redis.

The directory: `hub:ss:<session>` names the node holding the session (its run: a node
restarted under the same id is another). Written at `register` (one `SET`), deleted at
`unregister` (one `DEL`), and written again for every held session every `HUB_NODE_TTL`/3
seconds with a TTL of `HUB_NODE_TTL`, in pipelines of `REFRESH_BATCH`: the keys of a node
that dies expire within `HUB_NODE_TTL`, as its registration does, and keys a Redis lost
come back within a refresh.

Messages: each node listens on its own channel (`hub.mailbox.listener`). A forward is one
`GET` of the directory, then, for a session some node holds, one `PUBLISH` of the request
to the holder's channel; the holder replies with one `PUBLISH` to the forwarder's channel.
A `PUBLISH` that no connection receives means the holder no longer listens: 404 at once.
On a Redis Cluster the channels are sharded (`SPUBLISH`, `SSUBSCRIBE`), as room channels
are, so a publish's count of receivers is the whole cluster's.

Forwards and replies are queued and sent by one task, in call order, all those queued
meanwhile in one pipeline (the directory reads and the replies) and one more (the
requests): the requests of one node for one session reach the holder in the order the
forwards were made.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from hub.broker.subscriber import PLAIN, SHARDED
from hub.errors import BrokerUnavailable
from hub.mailbox import messages
from hub.mailbox.base import (
    FORWARDS_IN_FLIGHT,
    NOT_FOUND,
    REPLY_TIMEOUT,
    UNAVAILABLE,
    Mailbox,
    OnRequest,
)
from hub.mailbox.inbox import INBOX_SIZE, Answer, Inbox
from hub.mailbox.listener import Listener
from hub.mailbox.messages import Incoming, Reply, Request
from hub.outage import Outage
from hub.redis.clients import Clients
from hub.redis.failures import FAILURES, unavailable
from hub.tasks import cancel

log = logging.getLogger("hub.mailbox")

SESSION_PREFIX = "hub:ss:"
CHANNEL_PREFIX = "hub:mb:"
SLOTS_INTERVAL = 1.0
"""Fewest seconds between two lessons of a cluster's slots for publishes nobody received."""
REFRESH_BATCH = 1000
"""Directory keys written per round trip by a refresh."""
REPLIES_WAITING = INBOX_SIZE
"""Replies waiting for the writer; past it one is dropped (its forwarder times out)."""


def session_key(session: str) -> str:
    return SESSION_PREFIX + session


def channel_of(node: str) -> bytes:
    """The channel node `node` (a run's name) listens on."""
    return (CHANNEL_PREFIX + node).encode()


_Publish = tuple[bytes, bytes]
"""A message to publish: (channel, message)."""


@dataclass(slots=True)
class _Forward:
    """A forward on its way: its request number, and its status once known."""

    number: int
    request: Request
    status: asyncio.Future[int]
    sent: bool = field(default=False)
    """The holder got the request: from now on only its reply settles the status."""


_Sending = tuple[_Publish, _Forward | None]
"""A request with its forward, or a reply (None)."""


def _settle(forward: _Forward, status: int) -> None:
    if not forward.status.done():
        forward.status.set_result(status)


class RedisMailbox(Mailbox):
    """Sessions held across the cluster, and requests to their holders through Redis."""

    def __init__(self, clients: Clients, name: str, node_ttl: float, outage: Outage) -> None:
        super().__init__()
        self._clients = clients
        self._redis = clients.writes
        verbs = SHARDED if clients.sharded else PLAIN
        self._publish = verbs.publish
        self._name = name
        self._ttl_ms = int(node_ttl * 1000)
        self._refresh_every = node_ttl / 3
        self._outage = outage
        self._slots_at = -SLOTS_INTERVAL
        """When the cluster's slots were last learnt again for a publish nobody received."""
        self._held: set[str] = set()
        self._numbers = itertools.count(1)
        self._pending: dict[int, _Forward] = {}
        """Forwards under way, by request number: a reply to any other is dropped."""
        self._outgoing: list[_Forward] = []
        self._replies: list[_Publish] = []
        self._ready = asyncio.Event()
        self._inbox = Inbox()
        self._listener = Listener(clients, channel_of(name), verbs, self._heard, outage)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def available(self) -> bool:
        return self._listener.available

    async def start(self, on_request: OnRequest) -> None:
        self._inbox.start(on_request)
        self._listener.start()
        self._tasks = [
            asyncio.create_task(self._write(), name="mailbox-writer"),
            asyncio.create_task(self._keep(), name="mailbox-directory"),
        ]

    async def stop(self) -> None:
        """Stop listening first: from then on a publish to this node reaches no one, and
        its forwarders answer 404 at once."""
        await self._listener.stop()
        await self._inbox.stop()
        await cancel(self._tasks)
        self._tasks = []
        for forward in self._pending.values():
            _settle(forward, UNAVAILABLE)

    async def register(self, session: str) -> None:
        self._held.add(session)
        try:
            with unavailable("redis stream session not registered"):
                await self._redis.set(session_key(session), self._name, px=self._ttl_ms)
        except BrokerUnavailable:
            self._held.discard(session)
            raise

    async def unregister(self, session: str) -> None:
        """A key that could not be deleted expires within `HUB_NODE_TTL`; until then this
        node answers its forwards 404."""
        self._held.discard(session)
        try:
            await self._redis.delete(session_key(session))
        except FAILURES as error:
            self._outage.failed("mailbox directory", error)

    async def _forward(self, request: Request) -> int:
        if not self.available or len(self._outgoing) >= FORWARDS_IN_FLIGHT:
            return UNAVAILABLE  # a reply could not reach this node; or Redis lags far behind
        forward = _Forward(next(self._numbers), request, asyncio.get_running_loop().create_future())
        self._pending[forward.number] = forward
        self._outgoing.append(forward)
        self._ready.set()
        try:
            async with asyncio.timeout(REPLY_TIMEOUT):
                return await forward.status
        except TimeoutError:
            return NOT_FOUND if forward.sent else UNAVAILABLE
        finally:
            del self._pending[forward.number]

    def _heard(self, payload: bytes) -> None:
        """A message on this node's channel: a reply to one of its forwards, or a request
        for one of its sessions."""
        message = messages.parse(payload)
        if isinstance(message, Reply):
            forward = self._pending.get(message.number)
            if forward is not None:
                _settle(forward, message.status)
        elif isinstance(message, Incoming):
            if message.request.session in self._held:
                self._inbox.put(message.request, self._answer(message))
            else:
                self._answer(message)(NOT_FOUND)

    def _answer(self, incoming: Incoming) -> Answer:
        channel, number = channel_of(incoming.sender), incoming.number

        def answer(status: int) -> None:
            if len(self._replies) < REPLIES_WAITING:
                self._replies.append((channel, messages.reply(number, status)))
                self._ready.set()

        return answer

    async def _write(self) -> None:
        """Send what was queued meanwhile, over and over; a batch Redis failed settles its
        forwards 503, and the next one is sent all the same."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            forwards = [forward for forward in self._outgoing if not forward.status.done()]
            replies, self._outgoing, self._replies = self._replies, [], []
            try:
                await self._send(forwards, replies)
            except Exception as error:
                if isinstance(error, FAILURES):
                    self._outage.failed("mailbox", error)
                else:
                    log.exception("mailbox write failed")
                for forward in forwards:
                    if not forward.sent:
                        _settle(forward, UNAVAILABLE)

    async def _send(self, forwards: list[_Forward], replies: list[_Publish]) -> None:
        """The replies and the directory reads in one round trip, then the requests to
        the holders found, in order.

        On a cluster, a publish nobody received may have gone by a stale map of the slots:
        a master that gave the channel's slot away and became a replica of the one that
        took it counts no receiver, and says no `MOVED`. So the slots are learnt again (at
        most every `SLOTS_INTERVAL`) and what nobody received is published once more."""
        pipe = self._redis.pipeline(transaction=False)
        for channel, reply in replies:
            pipe.execute_command(self._publish, channel, reply)
        for forward in forwards:
            pipe.get(session_key(forward.request.session))
        results: list[Any] = await pipe.execute(raise_on_error=False)
        unheard: list[_Sending] = [
            (reply, None)
            for reply, count in zip(replies, results[: len(replies)], strict=True)
            if count == 0
        ]
        requests: list[_Sending] = []
        for forward, holder in zip(forwards, results[len(replies) :], strict=True):
            if isinstance(holder, Exception):
                _settle(forward, UNAVAILABLE)
            elif holder is None:
                _settle(forward, NOT_FOUND)
            elif not forward.status.done():
                message = messages.request(forward.number, self._name, forward.request)
                requests.append(((channel_of(holder.decode()), message), forward))
        if requests:
            unheard += await self._publish_all(requests)
        if unheard:
            await self._unheard(unheard)

    async def _unheard(self, unheard: list[_Sending]) -> None:
        """Publish again, on a cluster, after learning the slots; then a request still
        unheard is answered 404 (its holder does not listen), a reply dropped."""
        now = time.monotonic()
        if self._clients.sharded and now - self._slots_at >= SLOTS_INTERVAL:
            self._slots_at = now
            await self._clients.refresh()
            unheard = await self._publish_all(unheard)
        for _, forward in unheard:
            if forward is not None:
                _settle(forward, NOT_FOUND)

    async def _publish_all(self, sending: list[_Sending]) -> list[_Sending]:
        """Publish in order; what no connection received."""
        pipe = self._redis.pipeline(transaction=False)
        for (channel, message), _ in sending:
            pipe.execute_command(self._publish, channel, message)
        counts: list[Any] = await pipe.execute(raise_on_error=False)
        unheard = []
        for (publish, forward), receivers in zip(sending, counts, strict=True):
            if receivers == 0:
                unheard.append((publish, forward))
            elif forward is None:
                continue  # a reply: sent, or lost with a failed shard (its forwarder times out)
            elif isinstance(receivers, Exception):
                _settle(forward, UNAVAILABLE)
            else:
                forward.sent = True
        return unheard

    async def _keep(self) -> None:
        """Write every held session's key again, every `HUB_NODE_TTL`/3 seconds."""
        while True:
            await asyncio.sleep(self._refresh_every)
            held = list(self._held)
            try:
                for at in range(0, len(held), REFRESH_BATCH):
                    pipe = self._redis.pipeline(transaction=False)
                    for session in held[at : at + REFRESH_BATCH]:
                        pipe.set(session_key(session), self._name, px=self._ttl_ms)
                    await pipe.execute()
            except FAILURES as error:
                self._outage.failed("mailbox directory", error)
