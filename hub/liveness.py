"""Device heartbeat deadlines: who fell silent, found at a cost of O(expired) per tick.

Devices that share a timeout expire in the order they were last heard from. An
insertion-ordered dict kept in that order (a heartbeat moves its device to the end) is
then also a priority queue: the expired devices are a prefix of it. A device whose token
claims its own interval has its own timeout, so the watch keeps one such dict, a lane, per
timeout in use: a heartbeat costs a lookup of its device's lane and one `move_to_end`; a
sweep looks only at the devices it closes, plus the first of each lane that it does not.
Claims are whole seconds within `HUB_HEARTBEAT_MIN` and `HUB_HEARTBEAT_MAX`, so there are
at most that many lanes, and only those in use are kept.
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
    """Closes with 4008 every device that sent no heartbeat for its timeout: the node's
    `timeout`, or the one its claim makes (`watch`). It sweeps every tenth of the
    `shortest` timeout a device may have, at most every `MAX_TICK`."""

    def __init__(self, timeout: float, shortest: float | None = None) -> None:
        self._own: Deadlines[Silent] = Deadlines(timeout)
        self._lanes: dict[float, Deadlines[Silent]] = {timeout: self._own}
        self._lane_of: dict[Silent, Deadlines[Silent]] = {}
        """The lane of each device whose timeout is not the node's."""
        self._tick = min(MAX_TICK, min(timeout, shortest or timeout) / 10)
        self._clock: Callable[[], float] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, clock: Callable[[], float] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._clock = clock or loop.time
        self._task = loop.create_task(self._sweep(), name="heartbeat-watch")

    async def stop(self) -> None:
        await cancel([self._task])

    def watch(self, device: Silent, timeout: float) -> None:
        """Start watching `device`, silent for at most `timeout` seconds from now on."""
        assert self._clock is not None
        self.forget(device)
        lane = self._lanes.get(timeout)
        if lane is None:
            lane = self._lanes[timeout] = Deadlines(timeout)
        if lane is not self._own:
            self._lane_of[device] = lane
        lane.touch(device, self._clock())

    def beat(self, device: Silent) -> None:
        """Push back the deadline of `device`, which just spoke; one not watched yet gets
        the node's timeout."""
        assert self._clock is not None
        self._lane_of.get(device, self._own).touch(device, self._clock())

    def forget(self, device: Silent) -> None:
        self._lane_of.pop(device, self._own).discard(device)

    def silent(self) -> list[Silent]:
        """Take out every device whose deadline has passed, lane by lane, oldest first;
        lanes left empty are dropped, the node's own kept."""
        assert self._clock is not None
        now = self._clock()
        lane_of = self._lane_of
        gone: list[Silent] = []
        for timeout, lane in list(self._lanes.items()):
            expired = lane.expired(now)
            if lane is not self._own:
                for device in expired:
                    lane_of.pop(device, None)
                if not lane:
                    del self._lanes[timeout]
            gone.extend(expired)
        return gone

    def __len__(self) -> int:
        """Devices watched."""
        return sum(len(lane) for lane in self._lanes.values())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            for device in self.silent():
                device.close(HEARTBEAT_TIMEOUT)
