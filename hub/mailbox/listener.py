"""This node's subscription to its own mailbox channel, kept up: on one Redis (or the
master Sentinels name) a connection of its own; on a Redis Cluster one to the shard that
holds the channel's slot, over sharded pub/sub, as room channels go.

A subscription that fails is rebuilt after a `reconnect_backoff()` wait, and the
cluster's slots are learnt again first (the channel's slot may have moved: the shard then
says `sunsubscribe`, or refuses the subscribe with `MOVED`). Like the broker's
subscribers, the listener publishes a canary to its own channel every `CANARY_INTERVAL`:
one that no connection receives, or that is not heard within `CANARY_DEAF`, rebuilds it.
Until it is subscribed again the node's sessions cannot be reached (their forwards answer
404) and its own forwards answer 503: their replies could not reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisClusterException

from hub.backoff import reconnect_backoff
from hub.broker.subscriber import Verbs
from hub.mailbox.messages import CANARY
from hub.outage import Outage
from hub.redis.clients import COMMAND_TIMEOUT, Clients
from hub.redis.failures import FAILURES
from hub.tasks import cancel

log = logging.getLogger("hub.mailbox")

CANARY_INTERVAL = 2.0
CANARY_DEAF = 6.0
"""A subscription that has heard no canary for this long carries nothing: rebuilt."""
_FAILED: tuple[type[Exception], ...] = (*FAILURES, KeyError, IndexError, RedisClusterException)
"""A failure of Redis, or a cluster client asked for a slot's shard before it knows the
slots."""


class _Moved(Exception):
    """The shard gave the channel's slot up: not an outage, the channel lives elsewhere."""


class Listener:
    """Hands every message on `channel` but canaries to `heard`."""

    def __init__(
        self,
        clients: Clients,
        channel: bytes,
        verbs: Verbs,
        heard: Callable[[bytes], None],
        outage: Outage,
    ) -> None:
        self._clients = clients
        self._channel = channel
        self._verbs = verbs
        self._publish = verbs.publish
        """By name: a cluster client that follows a `MOVED` looks the command up by it."""
        self._heard = heard
        self._outage = outage
        self.available = False
        """Subscribed: messages published to the channel now reach this node."""
        self._canary_at = 0.0
        self._conn: AbstractConnection | None = None
        self._leaving = False
        self._left = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mailbox-listener")

    async def stop(self) -> None:
        """Unsubscribe, and wait (at most `COMMAND_TIMEOUT`) for Redis to confirm it: from
        then on a publish to the channel counts no receiver."""
        self._leaving = True
        if self.available and self._conn is not None:
            with contextlib.suppress(*_FAILED, TimeoutError):
                await self._conn.send_command(self._verbs.unsubscribe, self._channel)
                async with asyncio.timeout(COMMAND_TIMEOUT):
                    await self._left.wait()
        await cancel([self._task])
        self._task = None
        self.available = False

    async def _run(self) -> None:
        backoff = reconnect_backoff()
        learn = self._clients.start
        while not self._leaving:
            conn: AbstractConnection | None = None
            try:
                await learn()
                learn = self._clients.refresh
                conn = self._conn = self._clients.connection(self._clients.shard_of(self._channel))
                await self._subscribe(conn)
                backoff.reset()
                self._outage.answered()
                await self._serve(conn)
            except _Moved:
                log.info("the mailbox channel's slot moved: subscribing on its new shard")
            except _FAILED as error:
                self._outage.failed("mailbox subscriber", error)
            except Exception:
                log.exception("mailbox subscriber failed; subscribing again")
            finally:
                self.available = False
                self._conn = None
                if conn is not None:
                    await conn.disconnect(nowait=True)
            await asyncio.sleep(backoff.next())

    async def _subscribe(self, conn: AbstractConnection) -> None:
        await conn.connect()  # type: ignore[no-untyped-call]
        await conn.send_command(self._verbs.subscribe, self._channel)
        reply = await conn.read_response(timeout=COMMAND_TIMEOUT)
        if not (isinstance(reply, list) and reply[0] == self._verbs.subscribed):
            raise ConnectionError(f"redis answered the subscribe with {reply!r}")
        self._canary_at = time.monotonic()
        self.available = True

    async def _serve(self, conn: AbstractConnection) -> None:
        tasks = [asyncio.create_task(self._read(conn)), asyncio.create_task(self._check())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            await cancel(tasks)

    async def _read(self, conn: AbstractConnection) -> None:
        channel, message, heard = self._channel, self._verbs.message, self._heard
        while True:
            reply = await conn.read_response(timeout=math.inf)
            if not isinstance(reply, list):
                continue
            if reply[0] == message and reply[1] == channel:
                if reply[2] == CANARY:
                    self._canary_at = time.monotonic()
                else:
                    heard(reply[2])
            elif reply[0] == self._verbs.unsubscribed:
                self.available = False
                if self._leaving:
                    self._left.set()
                    return
                raise _Moved

    async def _check(self) -> None:
        """Publish a canary; raise when the channel is not carried any more."""
        while True:
            await asyncio.sleep(CANARY_INTERVAL)
            if time.monotonic() - self._canary_at > CANARY_DEAF:
                raise ConnectionError("the mailbox channel carried no canary")
            try:
                receivers = await self._clients.writes.execute_command(
                    self._publish, self._channel, CANARY
                )
            except FAILURES:
                continue  # the writers tell the outage; the canary's silence decides
            if receivers == 0:
                raise ConnectionError("redis has no subscriber on the mailbox channel")
