"""Device heartbeat deadlines: who fell silent, found at a cost of O(expired) per tick.

Every device has the same timeout, so deadlines expire in the order they were last set.
An insertion-ordered dict kept in that order (a heartbeat moves its device to the end) is
then also a priority queue: the expired devices are a prefix of it. A heartbeat costs one
`move_to_end`; a sweep looks only at the devices it closes, plus one that it does not.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

from hub.disconnect import HEARTBEAT_TIMEOUT, Disconnect
from hub.tasks import cancel

T = TypeVar("T", bound=Hashable)
MAX_TICK = 1.0


class Deadlines(Generic[T]):
    """Items that expire `timeout` seconds after they were last touched."""

    __slots__ = ("_order", "_timeout")

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._order: OrderedDict[T, float] = OrderedDict()

    def touch(self, item: T, now: float) -> None:
        order = self._order
        order[item] = now + self._timeout
        order.move_to_end(item)

    def discard(self, item: T) -> None:
        self._order.pop(item, None)

    def expired(self, now: float) -> list[T]:
        """Take out and return every item whose deadline has passed, oldest first."""
        order = self._order
        gone: list[T] = []
        while order:
            item, deadline = next(iter(order.items()))
            if deadline > now:
                break
            del order[item]
            gone.append(item)
        return gone

    def __len__(self) -> int:
        return len(self._order)


class Silent(Hashable, Protocol):
    """What the watch closes when it falls silent."""

    def close(self, cause: Disconnect) -> None:
        """Close the socket."""


class HeartbeatWatch:
    """Closes with 4008 every device that sent no heartbeat for `timeout` seconds."""

    def __init__(self, timeout: float) -> None:
        self._deadlines: Deadlines[Silent] = Deadlines(timeout)
        self._tick = min(MAX_TICK, timeout / 10)
        self._clock: Callable[[], float] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._clock = loop.time
        self._task = loop.create_task(self._sweep(), name="heartbeat-watch")

    async def stop(self) -> None:
        await cancel([self._task])

    def beat(self, device: Silent) -> None:
        """Start watching `device`, or push its deadline back: it just spoke."""
        assert self._clock is not None
        self._deadlines.touch(device, self._clock())

    def forget(self, device: Silent) -> None:
        self._deadlines.discard(device)

    async def _sweep(self) -> None:
        assert self._clock is not None
        while True:
            await asyncio.sleep(self._tick)
            for device in self._deadlines.expired(self._clock()):
                device.close(HEARTBEAT_TIMEOUT)
