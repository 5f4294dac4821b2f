"""The Redis broker's writes (publishes, receipts): script calls queued as they come and
sent by one task in pipelines, in call order: one round trip for all the calls queued
meanwhile, however many sockets and requests they came from."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.commands.core import AsyncScript

from hub.errors import BrokerUnavailable
from hub.outage import Outage
from hub.redis.clients import RedisClient
from hub.redis.failures import FAILURES
from hub.redis.scripts import ScriptCall, call_all

log = logging.getLogger("hub.broker")

Settle = Callable[[asyncio.Future[Any], Any], None]
"""Resolves a call's future from the script's reply."""


@dataclass(frozen=True, slots=True)
class _Call(ScriptCall):
    """One script call waiting in the outbox, and how its reply resolves its future."""

    future: asyncio.Future[Any]
    settle: Settle


class Outbox:
    """Script calls waiting to be written, and the task that writes them."""

    def __init__(self, client: RedisClient, outage: Outage) -> None:
        self._client = client
        self._outage = outage
        self._calls: list[_Call] = []
        self._ready = asyncio.Event()

    def send(
        self, script: AsyncScript, slot: str, args: Sequence[Any], settle: Settle
    ) -> asyncio.Future[Any]:
        """Queue one call now; the future is resolved by `settle`, or fails with
        `BrokerUnavailable`."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls.append(_Call(script, slot, args, future, settle))
        self._ready.set()
        return future

    async def run(self) -> None:
        """Send the calls queued meanwhile in one pipeline, over and over."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            batch, self._calls = self._calls, []
            try:
                results = await call_all(self._client, batch)
            except Exception as error:
                # Whatever went wrong, these calls fail and the next ones are sent: a
                # writer that died would leave every publish of the node waiting forever.
                if isinstance(error, FAILURES):
                    self._outage.failed("publish", error)
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
