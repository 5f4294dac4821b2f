"""The Redis broker: nodes meet on one pub/sub channel per room.

One subscriber connection per node carries every room this node has members in. Its
commands go out in call order from one writer task, so a room left and joined again in
quick succession ends up subscribed. Replies are read by one reader task that hands
message payloads on untouched. When the connection drops, both tasks end, waiters are
failed, and the connection is rebuilt with backoff, resubscribing every room still wanted.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError
from redis.retry import Retry

from hub.backoff import Backoff
from hub.broker import scripts
from hub.broker.base import (
    Broker,
    BrokerUnavailable,
    Claim,
    Deliver,
    HistoryPage,
    IdempotencyConflict,
    Outgoing,
    Receipt,
    Replay,
    Sent,
)
from hub.envelope import ID_END
from hub.history import Retention, TenantBounds, parse_id
from hub.outage import Outage
from hub.rooms import RoomKey

log = logging.getLogger("hub.broker")

CHANNEL_PREFIX = scripts.CHANNEL_PREFIX.encode()
CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 5.0
HEALTH_INTERVAL = 3.0
WRITE_CONNECTIONS = 8
"""The node's own writers: the publish pipeline, presence, the registry, the figures."""
_SUBSCRIBE = b"SUBSCRIBE"
_UNSUBSCRIBE = b"UNSUBSCRIBE"
_PING = b"PING"


_Args = list[bytes | str | int | float]
"""One call of a script."""


@dataclass(frozen=True, slots=True)
class _Call:
    """One script call waiting in the outbox, and how its reply resolves its future."""

    script: AsyncScript
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
        self, url: str, bounds: TenantBounds, state_ttl_ms: int, read_connections: int = 32
    ) -> None:
        self._bounds = bounds
        self._state_ttl_ms = state_ttl_ms
        self.outage = Outage(url)
        """Where this node's parts report what they find of Redis."""
        options = {
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "socket_timeout": COMMAND_TIMEOUT,
            "socket_keepalive": True,
            "retry": Retry(NoBackoff(), 0),
            # RESP2: pub/sub replies come back from read_response, not through push handlers.
            "protocol": 2,
        }
        self._pool = BlockingConnectionPool.from_url(
            url, max_connections=WRITE_CONNECTIONS, timeout=COMMAND_TIMEOUT, **options
        )
        self.client: Redis = Redis(connection_pool=self._pool)
        """Writes: publishes and presence, never queued behind readers."""
        self._read_pool = BlockingConnectionPool.from_url(
            url, max_connections=read_connections, timeout=COMMAND_TIMEOUT, **options
        )
        self.reader: Redis = Redis(connection_pool=self._read_pool)
        """Reads for clients (history, presence, figures): at most `read_connections` at
        once; more wait for a connection, up to the command timeout, then are refused."""
        self._publish = self.client.register_script(scripts.PUBLISH)
        self._receipt = self.client.register_script(scripts.RECEIPT)
        self._history = self.reader.register_script(scripts.HISTORY)
        self._deliver: Deliver | None = None
        self._wanted: dict[bytes, RoomKey] = {}
        """Channels this node wants, to the room each carries."""
        self._waiters: defaultdict[bytes, deque[asyncio.Future[None]]] = defaultdict(deque)
        self._commands: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue()
        self._outbox: list[_Call] = []
        self._outbox_ready = asyncio.Event()
        self._available = False
        self._heard = True
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._tasks = [
            asyncio.create_task(self._run(), name="redis-broker"),
            asyncio.create_task(self._send_outbox(), name="redis-publish"),
        ]

    async def disconnect(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client, pool in ((self.client, self._pool), (self.reader, self._read_pool)):
            await client.aclose()
            await pool.disconnect()

    @property
    def available(self) -> bool:
        return self._available

    async def subscribe(self, key: RoomKey) -> None:
        if not self._available:
            raise BrokerUnavailable("redis is unreachable")
        channel = channel_of(key)
        waiter = asyncio.get_running_loop().create_future()
        self._wanted[channel] = key
        self._waiters[channel].append(waiter)
        self._commands.put_nowait((_SUBSCRIBE, channel))
        try:
            await waiter
        except BrokerUnavailable:
            self._wanted.pop(channel, None)
            raise

    async def unsubscribe(self, key: RoomKey) -> None:
        channel = channel_of(key)
        self._wanted.pop(channel, None)
        if self._available:
            self._commands.put_nowait((_UNSUBSCRIBE, channel))

    def publish_soon(
        self, messages: Sequence[Outgoing], claim: Claim | None = None
    ) -> asyncio.Future[Sent]:
        if not self._available:
            raise BrokerUnavailable("redis is unreachable")
        bounds = self._bounds
        args: _Args = [
            new_epoch(),
            messages[0].key.tenant,
            bounds.publish_bytes,
            bounds.publish_burst,
            bounds.history_rooms,
            claim_arg(claim),
            self._state_ttl_ms,
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
        return self._send(self._publish, args, self._published)

    def receipt_soon(self, receipt: Receipt) -> asyncio.Future[bool]:
        if not self._available:
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
        return self._send(self._receipt, args, _stored)

    def _send(
        self,
        script: AsyncScript,
        args: _Args,
        settle: Callable[[asyncio.Future[Any], Any], None],
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._outbox.append(_Call(script, args, future, settle))
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
            pipe.evalsha(call.script.sha, 0, *call.args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    async def receipts(self, key: RoomKey, event_id: str) -> list[bytes]:
        if not self._available:
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
        if not self._available:
            raise BrokerUnavailable("redis is unreachable")
        try:
            epoch, trimmed, last, events, first, kept = await self._history(
                args=[key.name, new_epoch(), since or "", limit, "1" if state else ""]
            )
        except (RedisError, OSError) as error:
            raise BrokerUnavailable(f"redis history read failed: {error}") from error
        return HistoryPage(
            epoch=epoch.decode(),
            events=[event + ID_END for event in events],
            last=last.decode() if last else None,
            trimmed=parse_id(trimmed.decode()) or (0, 0),
            first=parse_id(first.decode()) if first else None,
            state=kept,
        )

    async def states(self, keys: Sequence[RoomKey]) -> list[list[bytes]]:
        if not self._available:
            raise BrokerUnavailable("redis is unreachable")
        pipe = self.reader.pipeline(transaction=False)
        for key in keys:
            pipe.hvals(scripts.STATE_PREFIX + key.name)
        try:
            kept: list[list[bytes]] = await pipe.execute()
        except (RedisError, OSError) as error:
            raise BrokerUnavailable(f"redis state read failed: {error}") from error
        return kept

    async def _run(self) -> None:
        backoff = Backoff(base=0.1, cap=5.0)
        while True:
            conn: AbstractConnection = self._pool.make_connection()  # type: ignore[no-untyped-call]
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
                await self._serve(conn, backoff)
            except (RedisError, OSError) as error:
                self.outage.failed("subscriber", error)
            except Exception:
                log.exception("redis subscriber failed; reconnecting")
            finally:
                self._lost()
                await conn.disconnect(nowait=True)
            await asyncio.sleep(backoff.next())

    async def _serve(self, conn: AbstractConnection, backoff: Backoff) -> None:
        """Resubscribe what is wanted, then read and write until the connection fails."""
        while not self._commands.empty():
            self._commands.get_nowait()
        if self._wanted:
            await conn.send_command(_SUBSCRIBE, *self._wanted)
        self._available = True
        self._heard = True
        backoff.reset()
        self.outage.answered()
        log.info("redis subscriber connected, %d rooms resubscribed", len(self._wanted))
        tasks = [
            asyncio.create_task(self._read(conn)),
            asyncio.create_task(self._write(conn)),
            asyncio.create_task(self._watch()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _lost(self) -> None:
        self._available = False
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(BrokerUnavailable("redis connection lost"))
        self._waiters.clear()

    async def _read(self, conn: AbstractConnection) -> None:
        deliver = self._deliver
        assert deliver is not None
        wanted = self._wanted
        while True:
            reply = await conn.read_response(timeout=math.inf)
            self._heard = True
            if not isinstance(reply, list):
                continue  # a PING's answer while no channel is subscribed
            kind = reply[0]
            if kind == b"message":
                key = wanted.get(reply[1])
                if key is not None:
                    deliver(key, reply[2])
            elif kind == b"subscribe":
                waiters = self._waiters.get(reply[1])
                if waiters:
                    waiter = waiters.popleft()
                    if not waiter.done():
                        waiter.set_result(None)
                    if not waiters:
                        del self._waiters[reply[1]]

    async def _write(self, conn: AbstractConnection) -> None:
        """Send commands in call order; an unsubscribe overtaken by a new join is dropped."""
        while True:
            batch = [await self._commands.get()]
            while not self._commands.empty():
                batch.append(self._commands.get_nowait())
            commands = [
                (command, channel)
                for command, channel in batch
                if command != _UNSUBSCRIBE or channel not in self._wanted
            ]
            if commands:
                await conn.send_packed_command(conn.pack_commands(commands))

    async def _watch(self) -> None:
        """Ping on a quiet connection; a peer that stays silent past a ping is gone."""
        while True:
            await asyncio.sleep(HEALTH_INTERVAL)
            if not self._heard:
                raise ConnectionError("redis did not answer a ping")
            self._heard = False
            self._commands.put_nowait((_PING, b""))
