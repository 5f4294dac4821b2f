"""The mailbox of a node alone: the sessions and their requests stay in the process.

Mailboxes that share an `Exchange` meet through it as a cluster's nodes meet through
Redis; a node alone has one of its own, where a session it does not hold is held by no
node."""

from __future__ import annotations

import asyncio

from hub.mailbox.base import NOT_FOUND, REPLY_TIMEOUT, Mailbox, OnRequest
from hub.mailbox.inbox import Inbox
from hub.mailbox.messages import Request


class Exchange:
    """Which mailbox holds each session, for the mailboxes of one process."""

    def __init__(self) -> None:
        self.holders: dict[str, MemoryMailbox] = {}


class MemoryMailbox(Mailbox):
    """Requests handed to the holding mailbox's inbox in the process."""

    def __init__(self, exchange: Exchange | None = None) -> None:
        super().__init__()
        self._exchange = Exchange() if exchange is None else exchange
        self._inbox = Inbox()

    @property
    def available(self) -> bool:
        return self._inbox.running

    async def start(self, on_request: OnRequest) -> None:
        self._inbox.start(on_request)

    async def stop(self) -> None:
        await self._inbox.stop()

    async def register(self, session: str) -> None:
        self._exchange.holders[session] = self

    async def unregister(self, session: str) -> None:
        if self._exchange.holders.get(session) is self:
            del self._exchange.holders[session]

    async def _forward(self, request: Request) -> int:
        holder = self._exchange.holders.get(request.session)
        if holder is None:
            return NOT_FOUND
        status = asyncio.get_running_loop().create_future()

        def answer(value: int) -> None:
            if not status.done():
                status.set_result(value)

        holder._inbox.put(request, answer)
        try:
            async with asyncio.timeout(REPLY_TIMEOUT):
                result: int = await status
                return result
        except TimeoutError:
            return NOT_FOUND
