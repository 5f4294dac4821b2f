"""Stopping background tasks for good."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

GRACE_SECONDS = 1.0
"""How long a cancelled task may take to end before it is cancelled again."""


async def cancel(tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """Cancel `tasks` and return once every one has ended, cancelling again any that runs
    on. On Python 3.11, `asyncio.wait_for` (redis-py wraps each socket write in one)
    returns its result instead of raising when the cancel meets a write that has just
    finished: the task goes on with its cancel swallowed, and one await on it would wait
    for ever. What a task ended with is dropped, as `gather(return_exceptions=True)`
    drops it."""
    given = [task for task in tasks if task is not None]
    pending = {task for task in given if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=GRACE_SECONDS)
    for task in given:
        if not task.cancelled():
            task.exception()
