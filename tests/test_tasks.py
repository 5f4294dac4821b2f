"""Stopping background tasks, even one that swallows its cancel."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from hub.tasks import cancel


async def test_a_task_that_swallows_its_cancel_is_cancelled_again() -> None:
    """As one does on Python 3.11 when the cancel meets an `asyncio.wait_for` whose call
    just finished: it goes back to waiting, and one cancel would never end it."""
    swallowed = 0
    forever = asyncio.Event()

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await forever.wait()
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel([task]), 10)
    assert task.cancelled()
    assert swallowed == 1


async def test_what_a_task_ended_with_is_neither_raised_nor_left_unretrieved() -> None:
    """Also of a task that failed before the stop: asyncio would otherwise log it as an
    exception never retrieved once the task is collected."""
    unretrieved: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))

    async def failing() -> None:
        raise RuntimeError("its own")

    tasks = [asyncio.create_task(failing()), asyncio.create_task(asyncio.Event().wait())]
    await asyncio.sleep(0)
    assert tasks[0].done()
    await cancel([*tasks, None])
    assert tasks[1].cancelled()
    del tasks
    gc.collect()
    loop.set_exception_handler(None)
    assert unretrieved == []
