"""Presence across the cluster, kept in Redis (see `hub.presence.scripts` for the keys).

What a connection reports is queued and written by one task, in order, one pipeline per
`FLUSH_SECONDS`: 20,000 devices beating every 15 s cost about 20 round trips a second, not
1,300. Consecutive heartbeats share one script call.

Each node process registers an *instance* in `hub:nodes` and refreshes it every
`HUB_NODE_TTL`/3 seconds; every node also looks for instances that stopped refreshing,
declares them dead and reports their devices offline (`node_lost`), in atomic scripts, so
that a dead node's devices are reported once however many nodes survive it.

Whenever the copy in Redis may have drifted from this node's sockets (a write failed,
Redis lost its data, or the cluster declared this node dead while it was cut off), the
node registers a new instance, writes every socket it holds under it, then retires the
old instance: sockets that closed meanwhile are reported offline then, and nothing the
old instance left behind can come back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from hub.auth import STATUS_ROOM
from hub.backoff import Backoff
from hub.broker import BrokerUnavailable, Outgoing
from hub.broker.redis import RedisBroker, new_epoch
from hub.config import Settings
from hub.history import RetentionRules
from hub.metrics import Metrics
from hub.presence import scripts
from hub.presence.base import Gone, Member, Presence, Present
from hub.protocol import encode, event_frame
from hub.stats import Tally

log = logging.getLogger("hub.presence")

FLUSH_SECONDS = 0.05
"""How long reports gather before they are written in one round trip."""
MAX_PENDING = 100_000
"""Reports queued while Redis is slow; past this the queue is dropped and rebuilt."""
MAX_PENDING_BEATS = 20_000
"""Heartbeats queued; past this new ones are dropped (and counted), not the presence."""
BEATS_PER_CALL = 200
"""Heartbeats per script call: a call blocks Redis for everyone while it runs."""
REAP_BUDGET = 1000
"""Sockets of dead nodes cleaned up per script call, to keep each call short."""
RESYNC_BATCH = 500
"""Sockets written per round trip when the copy in Redis is rebuilt."""

_Op = tuple[AsyncScript, list[Any]]


def offline_head(tenant: str, sub: str, node: str) -> bytes:
    """A `device.offline` event of this socket's device, cut just before its reason: the
    script that reports it (perhaps on another node, after this one died) adds the
    reason, the time and the id, so even that event is encoded here, once."""
    data = {"device": sub, "node": node, "reason": ""}
    payload = event_frame(STATUS_ROOM, "device.offline", data, 0, None)
    tail = b'""},"ts":0}'
    assert payload.endswith(tail)
    return payload[: -len(tail)]


class RedisPresence(Presence):
    def __init__(
        self,
        broker: RedisBroker,
        run: str,
        settings: Settings,
        retention: RetentionRules,
        tally: Tally,
        metrics: Metrics,
    ) -> None:
        super().__init__(settings, retention, tally)
        self._redis = broker.client
        self._run = run
        self._ttl_ms = int(settings.node_ttl * 1000)
        self._refresh = settings.node_refresh
        self._handover_ms = int(settings.handover_seconds * 1000)
        self._metrics = metrics
        self._generation = 0
        self._instance = f"{run}#0"
        self._local: dict[str, Present] = {}
        self._pending: list[_Op] = []
        self._pending_beats = 0
        self._waiting: list[asyncio.Future[None]] = []
        """Connects in `_pending`, each waiting until it is written."""
        self._resync_due = True
        self._retire: set[str] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        register = self._redis.register_script
        self._register = register(scripts.REGISTER)
        self._refresh_script = register(scripts.REFRESH)
        self._retire_script = register(scripts.RETIRE)
        self._reap = register(scripts.REAP)
        self._node_figures = register(scripts.NODE_FIGURES)
        self._connect = register(scripts.CONNECT)
        self._join = register(scripts.JOIN)
        self._leave = register(scripts.LEAVE)
        self._disconnect = register(scripts.DISCONNECT)
        self._heartbeats = register(scripts.HEARTBEATS)
        self._pipelined = [
            self._connect,
            self._join,
            self._leave,
            self._disconnect,
            self._heartbeats,
        ]

    async def start(self) -> None:
        self._wake.set()
        self._tasks = [
            asyncio.create_task(self._write(), name="presence-writer"),
            asyncio.create_task(self._watch(), name="presence-watch"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            if not self._resync_due and self._pending:
                await self._flush()
            await self._retire_script(args=[self._instance, Gone.CLOSED.value])
            await self._reap_all()
        except (RedisError, OSError) as error:
            log.warning("presence not handed over (%s): the cluster will reap it", error)

    async def members(self, key: str) -> list[Member]:
        try:
            entries = [
                orjson.loads(raw) for raw in await self._redis.hvals(scripts.ROOM_PREFIX + key)
            ]
            devices = [entry for entry in entries if entry["role"] == "device"]
            beats = []
            if devices:
                tenant = key.partition(":")[0]
                beats = await self._redis.hmget(
                    scripts.HEARTBEAT_PREFIX + tenant, [entry["sub"] for entry in devices]
                )
        except (RedisError, OSError) as error:
            raise BrokerUnavailable(f"redis presence read failed: {error}") from error
        for entry in entries:
            entry["heartbeat"] = None
        for entry, beat in zip(devices, beats, strict=True):
            entry["heartbeat"] = orjson.loads(beat) if beat else None
        return entries

    async def report(self, figures: dict[str, Any]) -> None:
        if self._resync_due:
            return
        try:
            await self._redis.hset(scripts.STATS, self._instance, orjson.dumps(figures))
        except (RedisError, OSError) as error:
            log.debug("figures not reported: %s", error)

    async def nodes(self) -> list[dict[str, Any]]:
        try:
            found = await self._node_figures()
        except (RedisError, OSError) as error:
            raise BrokerUnavailable(f"redis stats read failed: {error}") from error
        return [orjson.loads(figures) for figures in found if figures]

    # What connections report: recorded locally at once, written to Redis in order.

    async def _connected(self, present: Present) -> None:
        """Return once the socket is in Redis (its device announced), without waiting for
        the next batch: a device welcomed on a second node before its first socket closed
        is then already known there, so the close cannot take it offline."""
        self._local[present.conn] = present
        self._queue(self._connect_op(present))
        if self._resync_due:
            return  # the rebuild, when Redis answers, will write it
        written = asyncio.get_running_loop().create_future()
        self._waiting.append(written)
        await written

    def _joined(self, present: Present, key: str) -> None:
        member = encode(present.member(self.node, key))
        self._queue((self._join, [present.conn, key, member]))

    def _left(self, present: Present, key: str) -> None:
        self._queue((self._leave, [present.conn, key]))

    def _disconnected(self, present: Present, reason: Gone) -> None:
        self._local.pop(present.conn, None)
        # A drained node's devices get a window to reconnect elsewhere before going offline.
        handover = self._handover_ms if reason is Gone.NODE_RESTART else 0
        self._queue((self._disconnect, [present.conn, reason.value, handover]))

    def _beat(self, present: Present, record: dict[str, Any], event: Outgoing) -> None:
        device = present.device
        assert device is not None
        if self._pending_beats >= MAX_PENDING_BEATS:
            self._tally.dropped["heartbeat_backlog"] += 1
            return
        self._pending_beats += 1
        self._queue(
            (self._heartbeats, [present.conn, *device, encode(record), event.prefix, event.suffix])
        )

    def _connect_op(self, present: Present) -> _Op:
        device = present.device
        record: dict[str, Any] = {
            "t": present.tenant or "",
            "s": present.sub,
            "r": list(present.rooms),
        }
        online: tuple[bytes, bytes] = (b"", b"")
        if device is not None:
            record["o"] = offline_head(*device, self.node).decode()
            event = self.online_event(present)
            online = (event.prefix, event.suffix)
        args: list[Any] = [present.conn, encode(record), present.tenant or "", present.sub, *online]
        for key in present.rooms:
            args += [key, encode(present.member(self.node, key))]
        return self._connect, args

    def _queue(self, op: _Op) -> None:
        if self._resync_due:
            return  # the rebuild will write what this node holds then
        if len(self._pending) >= MAX_PENDING:
            log.warning("presence queue full: rebuilding presence in Redis")
            _release(self._take()[1])
            self._resync_due = True
        else:
            self._pending.append(op)
        self._wake.set()

    # Writing.

    def _pkey(self, conn: str) -> str:
        return f"{self._generation}|{conn}"

    async def _write(self) -> None:
        backoff = Backoff(base=0.1, cap=5.0)
        while True:
            await self._wake.wait()
            if not self._waiting:
                await asyncio.sleep(FLUSH_SECONDS)
            self._wake.clear()
            try:
                if self._resync_due:
                    await self._resync()
                elif self._pending:
                    await self._flush()
                backoff.reset()
            except Exception as error:
                if isinstance(error, RedisError | OSError):
                    log.warning("presence write failed (%s): rebuilding when Redis answers", error)
                else:
                    log.exception("presence write failed: rebuilding")
                self._resync_due = True
                self._wake.set()
                await asyncio.sleep(backoff.next())

    def _take(self) -> tuple[list[_Op], list[asyncio.Future[None]]]:
        """Everything queued, and the connects waiting for it; the queue starts over."""
        ops, waiting = self._pending, self._waiting
        self._pending, self._waiting, self._pending_beats = [], [], 0
        return ops, waiting

    async def _flush(self) -> None:
        ops, waiting = self._take()
        try:
            await self._execute(self._pipeline(ops), len(ops))
        finally:
            _release(waiting)

    def _pipeline(self, ops: list[_Op]) -> Pipeline:
        """One pipeline of script calls for `ops`, in order, for the current instance;
        runs of heartbeats go `BEATS_PER_CALL` to a call. Every call starts with the same
        four arguments (see `scripts`), then the socket's pkey and the op's own."""
        pipe = self._redis.pipeline(transaction=False)
        common = (new_epoch(), self._instance, self._status.size, int(self._status.ttl * 1000))
        beats: list[Any] = []

        def write_beats() -> None:
            pipe.evalsha(self._heartbeats.sha, 0, *common, *beats)
            beats.clear()

        for script, args in ops:
            if script is self._heartbeats:
                beats += [self._pkey(args[0]), *args[1:]]
                if len(beats) >= BEATS_PER_CALL * len(args):
                    write_beats()
                continue
            if beats:
                write_beats()
            pipe.evalsha(script.sha, 0, *common, self._pkey(args[0]), *args[1:])
        if beats:
            write_beats()
        return pipe

    async def _execute(self, pipe: Pipeline, ops: int) -> None:
        """Run a pipeline of scripts loaded by `_resync`; a Redis that lost them (restarted)
        answers NOSCRIPT, which fails the write and so leads to a rebuild."""
        results = await pipe.execute()
        self._metrics.presence_writes.inc(ops)
        self._metrics.presence_round_trips.inc()
        if not all(results):
            log.warning("this node was declared dead: registering again")
            self._resync_due = True
            self._wake.set()

    async def _resync(self) -> None:
        """Write every socket of this node under a new instance, then retire the old one."""
        if self._generation:
            self._retire.add(self._instance)
        self._generation += 1
        self._instance = f"{self._run}#{self._generation}"
        _, waiting = self._take()
        self._resync_due = False
        ops = [self._connect_op(present) for present in self._local.values()]
        try:
            for script in self._pipelined:
                await self._redis.script_load(script.script)
            await self._register(args=[self._instance, self._ttl_ms])
            for start in range(0, len(ops), RESYNC_BATCH):
                batch = ops[start : start + RESYNC_BATCH]
                await self._execute(self._pipeline(batch), len(batch))
            for instance in list(self._retire):
                await self._retire_script(args=[instance, Gone.CLOSED.value])
                self._retire.discard(instance)
            await self._reap_all()
        except BaseException:
            self._resync_due = True
            raise
        finally:
            _release(waiting)
        log.info("presence registered as %s with %d sockets", self._instance, len(ops))

    # Watching the cluster.

    async def _watch(self) -> None:
        """Refresh this node's registration; declare dead the nodes that stopped doing so."""
        while True:
            await asyncio.sleep(self._refresh)
            try:
                instance = self._instance
                if not self._resync_due:
                    live = await self._refresh_script(args=[instance, self._ttl_ms])
                    if not live and instance == self._instance and not self._resync_due:
                        log.warning("this node was declared dead: registering again")
                        self._resync_due = True
                        self._wake.set()
                await self._reap_all()
            except (RedisError, OSError) as error:
                log.warning("presence watch failed: %s", error)

    async def _reap_all(self) -> None:
        status = self._status
        args: list[str | int] = [
            new_epoch(),
            REAP_BUDGET,
            status.size,
            int(status.ttl * 1000),
            Gone.NODE_LOST.value,
        ]
        left = 1
        while left:
            offline, declared, left = await self._reap(args=args)
            if declared or offline:
                log.info(
                    "declared %d node(s) dead, reported %d device(s) offline", declared, offline
                )
                self._metrics.devices_reaped.inc(offline)


def _release(waiting: list[asyncio.Future[None]]) -> None:
    for written in waiting:
        if not written.done():
            written.set_result(None)
    waiting.clear()
