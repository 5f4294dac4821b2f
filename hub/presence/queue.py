"""Presence reports waiting to be written to Redis, in call order, and the pipelines that
write them: one round trip per batch, however many sockets reported."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from redis.commands.core import AsyncScript

from hub.redis.clients import RedisClient
from hub.rooms import tag

MAX_PENDING = 100_000
"""Reports queued while Redis is slow; past this the queue is dropped and rebuilt."""
MAX_PENDING_BEATS = 20_000
"""Heartbeats queued; past this new ones are dropped (and counted), not the presence."""
BEATS_PER_CALL = 200
"""Heartbeats per script call: a call blocks Redis for everyone while it runs."""

Write = tuple[AsyncScript, str, list[Any]]
"""A script, the socket's tenant, and the script's own arguments, the socket's conn id
first."""


class WriteQueue:
    """Reports in call order, and the connects waiting until theirs is written."""

    def __init__(self, heartbeats: AsyncScript) -> None:
        self._heartbeats = heartbeats
        self._writes: list[Write] = []
        self._beats = 0
        self._waiting: list[asyncio.Future[None]] = []

    def put(self, write: Write) -> bool:
        """Queue `write`; False when the queue is full (and then dropped whole: the caller
        rebuilds presence instead)."""
        if len(self._writes) >= MAX_PENDING:
            release(self.take()[1])
            return False
        self._writes.append(write)
        return True

    def admit_beat(self) -> bool:
        """Make room for one more heartbeat; False when the heartbeat backlog is full and
        it is to be dropped."""
        if self._beats >= MAX_PENDING_BEATS:
            return False
        self._beats += 1
        return True

    def written(self) -> asyncio.Future[None]:
        """Resolves once what is queued now has been written (or given up on)."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        return future

    @property
    def waited_on(self) -> bool:
        return bool(self._waiting)

    def __len__(self) -> int:
        return len(self._writes)

    def take(self) -> tuple[list[Write], list[asyncio.Future[None]]]:
        """Everything queued, and the connects waiting for it; the queue starts over."""
        writes, waiting = self._writes, self._waiting
        self._writes, self._waiting, self._beats = [], [], 0
        return writes, waiting

    def pipeline(
        self,
        redis: RedisClient,
        writes: list[Write],
        common: tuple[Any, ...],
        pkey: Callable[[str], str],
    ) -> Any:
        """One pipeline of script calls for `writes`, in order; runs of heartbeats of one
        tenant go `BEATS_PER_CALL` to a call. Every call starts with the same `common`
        arguments (see `scripts`), the tenant, then the socket's pkey and the write's own."""
        pipe = redis.pipeline(transaction=False)
        beats: list[Any] = []
        beating = ""

        def write_beats() -> None:
            pipe.execute_command(
                "EVALSHA", self._heartbeats.sha, 1, tag(beating), *common, beating, *beats
            )
            beats.clear()

        for script, tenant, args in writes:
            if script is self._heartbeats:
                if beats and tenant != beating:
                    write_beats()
                beating = tenant
                beats += [pkey(args[0]), *args[1:]]
                if len(beats) >= BEATS_PER_CALL * len(args):
                    write_beats()
                continue
            if beats:
                write_beats()
            pipe.execute_command(
                "EVALSHA", script.sha, 1, tag(tenant), *common, tenant, pkey(args[0]), *args[1:]
            )
        if beats:
            write_beats()
        return pipe


def release(waiting: list[asyncio.Future[None]]) -> None:
    for written in waiting:
        if not written.done():
            written.set_result(None)
    waiting.clear()
