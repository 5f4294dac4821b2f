"""`eventually`: the wait that async tests rely on keeps their own clients served."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tests.support import eventually


async def test_a_blocking_check_leaves_the_event_loop_running() -> None:
    ticks = 0
    loop_thread = threading.get_ident()
    checked_in: set[int] = set()

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    def blocking_check() -> bool:
        checked_in.add(threading.get_ident())
        time.sleep(0.05)  # a blocking HTTP request would hold the thread like this
        return ticks >= 10

    ticking = asyncio.create_task(tick())
    try:
        await eventually(blocking_check, 30, "the loop to tick")
    finally:
        ticking.cancel()
    assert loop_thread not in checked_in


async def test_a_coroutine_check_is_awaited_on_the_loop() -> None:
    answers = iter([False, False, True])
    loop_thread = threading.get_ident()
    checked_in: set[int] = set()

    async def check() -> bool:
        checked_in.add(threading.get_ident())
        return next(answers)

    await eventually(check, 30, "the third answer", interval=0.001)
    assert checked_in == {loop_thread}


async def test_a_check_that_never_holds_times_out_naming_what_was_awaited() -> None:
    with pytest.raises(TimeoutError, match="timed out waiting for the impossible"):
        await eventually(lambda: False, 0.2, "the impossible")


async def test_a_check_that_hangs_still_times_out() -> None:
    release = threading.Event()
    try:
        with pytest.raises(TimeoutError, match="timed out waiting for a hung check"):
            await eventually(lambda: release.wait(30), 0.2, "a hung check")
    finally:
        release.set()


async def test_an_error_in_the_check_is_not_mistaken_for_the_deadline() -> None:
    def broken() -> bool:
        raise TimeoutError("the check's own")

    with pytest.raises(TimeoutError, match="the check's own"):
        await eventually(broken, 30, "a broken check")
