"""The requests that reached the node holding their session, handed to the stream code one
at a time in arrival order: the frames of one session's POSTs are taken in the order they
were forwarded."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from hub.mailbox.base import NOT_FOUND, UNAVAILABLE, OnRequest
from hub.mailbox.messages import Request
from hub.tasks import cancel

log = logging.getLogger("hub.mailbox")

INBOX_SIZE = 1024
"""Requests waiting for the stream code; past it a request is answered 503 at once."""

Answer = Callable[[int], None]
"""Told the status of one request."""


class Inbox:
    """Requests waiting for `on_request`, and the task that hands them over."""

    def __init__(self) -> None:
        self._waiting: deque[tuple[Request, Answer]] = deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self, on_request: OnRequest) -> None:
        self._task = asyncio.create_task(self._run(on_request), name="mailbox-inbox")

    async def stop(self) -> None:
        """Stop handing requests over; those still waiting are answered 404."""
        await cancel([self._task])
        self._task = None
        while self._waiting:
            _, answer = self._waiting.popleft()
            answer(NOT_FOUND)

    def put(self, request: Request, answer: Answer) -> None:
        """Queue `request`; `answer` is told its status, now when the inbox is full or
        stopped."""
        if self._task is None:
            answer(NOT_FOUND)
        elif len(self._waiting) >= INBOX_SIZE:
            answer(UNAVAILABLE)
        else:
            self._waiting.append((request, answer))
            self._ready.set()

    async def _run(self, on_request: OnRequest) -> None:
        waiting = self._waiting
        while True:
            await self._ready.wait()
            self._ready.clear()
            while waiting:
                request, answer = waiting.popleft()
                try:
                    status = await on_request(
                        request.session, request.sub, request.tenant, request.body
                    )
                except asyncio.CancelledError:
                    answer(NOT_FOUND)
                    raise
                except Exception:
                    log.exception("a stream request failed")
                    status = UNAVAILABLE
                answer(status)
