"""One pub/sub connection of a node to one Redis (or one cluster shard), and the room
channels it carries.

Commands go out in call order from one writer task, so a room left and joined again in
quick succession ends up subscribed. Replies are read by one reader task that hands
message payloads on untouched, and matches every other reply to the command it answers.

A channel this connection stops carrying without being asked (the connection broke, or a
cluster moved the channel's slot to another shard and said `sunsubscribe`) is *lost*: the
events published meanwhile never reach this node, so the broker is told at once and the
rooms' members must resume (`hub.node`). The connection is rebuilt with backoff and then
carries what is asked of it anew.

A connection can also stay up, answer every ping and still carry nothing (a subscription
lost on the server's side, a proxy that drops messages): so each subscriber also listens
to a canary channel of its own on its shard, which the broker publishes to every few
seconds. A subscriber that stops hearing its canary is *deaf*: rebuilt like a broken one,
and not available again until the new connection has heard a canary (a connection that
comes up is not yet proof that it hears).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

from hub.backoff import Backoff, reconnect_backoff
from hub.broker.base import Deliver
from hub.errors import BrokerUnavailable
from hub.outage import Outage
from hub.redis.failures import FAILURES
from hub.rooms import RoomKey
from hub.tasks import cancel

log = logging.getLogger("hub.broker")

HEALTH_INTERVAL = 3.0
_PING = b"PING"


@dataclass(frozen=True, slots=True)
class Verbs:
    """Pub/sub's words: plain, or sharded on a cluster."""

    subscribe: bytes
    unsubscribe: bytes
    message: bytes
    publish: str
    """A command's name, as redis-py takes it: a cluster client refuses one in bytes."""

    @property
    def subscribed(self) -> bytes:
        return self.subscribe.lower()

    @property
    def unsubscribed(self) -> bytes:
        return self.unsubscribe.lower()


PLAIN = Verbs(b"SUBSCRIBE", b"UNSUBSCRIBE", b"message", "PUBLISH")
SHARDED = Verbs(b"SSUBSCRIBE", b"SUNSUBSCRIBE", b"smessage", "SPUBLISH")

LostChannels = Callable[[list[bytes]], None]
"""Told the channels a subscriber lost, or was refused (a moved slot)."""


class Subscriber:
    """Carries channels of `rooms` (the broker's channel-to-room map, shared) from one
    shard; `dropped` hears of every channel it stops carrying unasked."""

    def __init__(
        self,
        shard: str,
        canary: Callable[[], bytes],
        connect: Callable[[], AbstractConnection],
        verbs: Verbs,
        rooms: dict[bytes, RoomKey],
        deliver: Deliver,
        dropped: LostChannels,
        outage: Outage,
    ) -> None:
        self.shard = shard
        self._canary_of = canary
        self.canary = b""
        """The channel only this subscriber listens to, on its shard (chosen again at every
        connect: a cluster may have moved the slot)."""
        self.round_trip: float | None = None
        """Seconds the last canary took from its publish to this connection."""
        self._heard_canary = 0.0
        self._deaf = asyncio.Event()
        self._connect = connect
        self._verbs = verbs
        self._rooms = rooms
        self._deliver = deliver
        self._dropped = dropped
        self._outage = outage
        self.channels: set[bytes] = set()
        """Channels this connection carries or is subscribing to."""
        self._waiters: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._commands: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue()
        self._sent: deque[tuple[bytes, bytes]] = deque()
        """Commands sent whose replies are still to come, oldest first."""
        self.connected = False
        self._suspect = False
        """Deaf once: not available until a canary is heard again."""
        self._heard = True
        self._task: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        return self.connected and not self._suspect

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"redis-subscriber {self.shard}")

    async def stop(self) -> None:
        """Stop for good; what it carried is lost."""
        await cancel([self._task])
        self._lose()

    async def subscribe(self, channel: bytes) -> None:
        """Return once Redis confirmed the subscription."""
        if not self.available:
            raise BrokerUnavailable("redis is unreachable")
        waiter = asyncio.get_running_loop().create_future()
        self.channels.add(channel)
        self._waiters.setdefault(channel, deque()).append(waiter)
        self._commands.put_nowait((self._verbs.subscribe, channel))
        await waiter

    def unsubscribe(self, channel: bytes) -> None:
        self.channels.discard(channel)
        if self.connected:
            self._commands.put_nowait((self._verbs.unsubscribe, channel))

    async def _run(self) -> None:
        backoff = reconnect_backoff()
        while True:
            conn = self._connect()
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
                await self._serve(conn, backoff)
            except FAILURES as error:
                self._outage.failed(f"subscriber {self.shard}".strip(), error)
            except Exception:
                log.exception("redis subscriber failed; reconnecting")
            finally:
                self._lose()
                await conn.disconnect(nowait=True)
            await asyncio.sleep(backoff.next())

    def heard_since(self, moment: float) -> bool:
        """Whether a canary arrived after `moment` (monotonic seconds)."""
        return self._heard_canary > moment

    def deafened(self) -> None:
        """The canary went unheard: rebuild the connection (its channels are lost)."""
        self._suspect = True
        self._deaf.set()

    async def _serve(self, conn: AbstractConnection, backoff: Backoff) -> None:
        while not self._commands.empty():
            self._commands.get_nowait()
        self._sent.clear()
        self._deaf.clear()
        self._heard_canary = time.monotonic()
        self.canary = self._canary_of()
        self._commands.put_nowait((self._verbs.subscribe, self.canary))
        self.connected = True
        self._heard = True
        backoff.reset()
        self._outage.answered()
        log.info("redis subscriber connected%s", f" to {self.shard}" if self.shard else "")
        tasks = [
            asyncio.create_task(self._read(conn)),
            asyncio.create_task(self._write(conn)),
            asyncio.create_task(self._watch()),
            asyncio.create_task(self._deafness()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            await cancel(tasks)

    def _lose(self) -> None:
        """The connection is gone: fail the waiters, and drop every channel it carried."""
        self.connected = False
        lost, self.channels = list(self.channels), set()
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(BrokerUnavailable("redis connection lost"))
        self._waiters.clear()
        if lost:
            self._dropped(lost)

    async def _read(self, conn: AbstractConnection) -> None:
        deliver, rooms, message = self._deliver, self._rooms, self._verbs.message
        while True:
            try:
                reply = await conn.read_response(timeout=math.inf)
            except ResponseError as error:
                self._refused(error)
                continue
            self._heard = True
            if isinstance(reply, list) and reply[0] == message:
                key = rooms.get(reply[1])
                if key is not None:
                    deliver(key, reply[2])
                elif reply[1] == self.canary:
                    self._canary(reply[2])
                continue
            self._answered(reply)

    def _canary(self, payload: bytes) -> None:
        """A canary the broker published at `payload` (monotonic seconds) came back."""
        now = time.monotonic()
        self._heard_canary = now
        self.round_trip = now - float(payload)
        self._suspect = False

    async def _deafness(self) -> None:
        await self._deaf.wait()
        raise ConnectionError("redis carried no canary: the subscription is deaf")

    def _answered(self, reply: object) -> None:
        """A reply to a command, or a channel dropped unasked."""
        kind = reply[0] if isinstance(reply, list) else reply
        channel = reply[1] if isinstance(reply, list) else b""
        if kind == self._verbs.unsubscribed and not self._expects(self._verbs.unsubscribe, channel):
            if channel in self.channels:  # moved with its slot: not carried any more
                self.channels.discard(channel)
                self._dropped([channel])
            return
        if self._sent:
            self._sent.popleft()
        if kind == self._verbs.subscribed:
            waiters = self._waiters.get(channel)
            if waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                if not waiters:
                    del self._waiters[channel]

    def _expects(self, command: bytes, channel: bytes) -> bool:
        return bool(self._sent) and self._sent[0] == (command, channel)

    def _refused(self, error: ResponseError) -> None:
        """An error answers the oldest command: a subscribe to a shard that no longer
        holds the channel's slot (`MOVED`), which the caller may try again elsewhere."""
        if not self._sent:
            return
        command, channel = self._sent.popleft()
        if command != self._verbs.subscribe or channel == self.canary:
            return
        waiters = self._waiters.get(channel)
        if waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_exception(BrokerUnavailable(f"redis refused the subscribe: {error}"))
            if not waiters:
                del self._waiters[channel]
        if channel in self.channels:
            self.channels.discard(channel)
            self._dropped([channel])

    async def _write(self, conn: AbstractConnection) -> None:
        """Send commands in call order; an unsubscribe overtaken by a new join is dropped."""
        while True:
            batch = [await self._commands.get()]
            while not self._commands.empty():
                batch.append(self._commands.get_nowait())
            commands = [
                (command, channel)
                for command, channel in batch
                if command != self._verbs.unsubscribe or channel not in self.channels
            ]
            if commands:
                self._sent.extend(commands)
                packed = [
                    (command,) if command == _PING else (command, channel)
                    for command, channel in commands
                ]
                await conn.send_packed_command(conn.pack_commands(packed))

    async def _watch(self) -> None:
        """Ping on a quiet connection; a peer that stays silent past a ping is gone."""
        while True:
            await asyncio.sleep(HEALTH_INTERVAL)
            if not self._heard:
                raise ConnectionError("redis did not answer a ping")
            self._heard = False
            self._commands.put_nowait((_PING, b""))
