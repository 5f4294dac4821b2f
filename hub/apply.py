"""Events handed to the application at their `apply_at`, by the hub's clock, not at arrival.

A broadcast may say when screens act on it (`apply_at`, ms since the epoch): the players
of a video wall then switch together, however far apart its frames reached them and
however wrong their own clocks are. The client tells the hub's clock from its own by an
offset: each `welcome` carries the hub's `time`, and so does each `pong`. A ping's sample
is corrected by half its round trip, so its error is at most that half; of the recent
samples, the one with the shortest round trip is used. The client pings only while it
holds events: one that is never sent `apply_at` sends nothing more than before.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from hub.dial import CONNECTION_ERRORS

log = logging.getLogger("hub.client")

Event = dict[str, Any]
Deliver = Callable[[Event], Awaitable[None]]
"""Hands one event to the application; it must not raise (a handler's failure is its own)."""
Request = Callable[[dict[str, Any]], Awaitable[Event]]
"""Sends a request frame over the current connection and returns its answer."""

MAX_SCHEDULED = 1000
"""Events held for their `apply_at` at once; past it, the one due soonest is handed over at
once rather than lost."""
CLOCK_SAMPLES = 8
"""Offset samples kept, the welcome's among them."""
CLOCK_WINDOW = 600_000.0
"""Ms a sample counts as recent: clocks drift apart (a quartz by up to 50 ppm, 30 ms in ten
minutes), so an old short round trip loses to a fresh long one. With none this recent, the
newest sample is used."""
CLOCK_PINGS = 3
"""Pings in a row of one round: one at least is seldom queued behind other frames."""
CLOCK_PING_INTERVAL = 60.0
"""Seconds between two rounds of pings, while events are held."""


def wall_ms() -> float:
    """This machine's clock, ms since the epoch."""
    return time.time() * 1000


def apply_at(event: Mapping[str, Any]) -> float | None:
    """When `event` is to be handed over, by the hub's clock (ms), or None: at once."""
    value = event.get("apply_at")
    return float(value) if _is_time(value) else None


@dataclass(frozen=True, slots=True)
class _Sample:
    offset: float
    """The hub's clock minus the local one, ms."""
    round_trip: float
    """Ms; infinite for a welcome's, whose delay on the way is unknown."""
    taken: float
    """The local clock when it came, ms."""


class HubClock:
    """The hub's clock as this client tells it: the local clock plus the offset of the best
    recent sample (none yet: the local clock as it is)."""

    def __init__(self, local: Callable[[], float] = wall_ms) -> None:
        self.local = local
        """The local clock, ms since the epoch."""
        self._samples: deque[_Sample] = deque(maxlen=CLOCK_SAMPLES)

    def now(self) -> float:
        """The hub's clock, ms since the epoch."""
        return self.local() + self.offset

    @property
    def offset(self) -> float:
        """Ms to add to the local clock to read the hub's."""
        if not self._samples:
            return 0.0
        now = self.local()
        recent = [sample for sample in self._samples if now - sample.taken <= CLOCK_WINDOW]
        if not recent:
            return self._samples[-1].offset
        # The newest of equals: welcomes' round trips are all unknown.
        return min(reversed(recent), key=lambda sample: sample.round_trip).offset

    def welcomed(self, welcome: Mapping[str, Any]) -> None:
        """A welcome's `time`: a sample as good as the way's delay, until pongs come."""
        received = self.local()
        if _is_time(hub := welcome.get("time")):
            self._samples.append(_Sample(hub - received, math.inf, received))

    def answered(self, hub: Any, sent: float, received: float) -> None:
        """A pong's `time`, for a ping sent and answered at those local times: the hub read
        its clock somewhere in between, best guessed halfway."""
        if _is_time(hub) and received >= sent:
            offset = hub - (sent + received) / 2
            self._samples.append(_Sample(offset, received - sent, received))

    async def ping(self, request: Request) -> None:
        """One ping; its pong is a sample (an error, or an older hub's pong, is not)."""
        sent = self.local()
        answer = await request({"op": "ping"})
        if answer.get("type") == "pong":
            self.answered(answer.get("time"), sent, self.local())


class Schedule:
    """Events held until their `apply_at` by the hub's clock, then handed over in that order,
    from a task of their own (a held event's handler may run while a live one's does).

    An event without `apply_at`, or with one already past, is handed over at once, in the
    caller's turn. Past `MAX_SCHEDULED` held events, the one due soonest is handed over at
    once. Held events outlive a connection; `drop` forgets them (the client stops, or
    leaves their room). Each new sample moves the wake-up to the new estimate.
    """

    def __init__(self, clock: HubClock, deliver: Deliver) -> None:
        self.clock = clock
        self._deliver = deliver
        self._held: list[tuple[float, int, Event]] = []
        """A heap by `apply_at`, then arrival."""
        self._arrivals = itertools.count()
        self._holding = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._handing: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._held)

    async def hand(self, event: Event) -> None:
        """Hand `event` over now, or hold it until its `apply_at`."""
        at = apply_at(event)
        if at is None or at <= self.clock.now():
            await self._deliver(event)
            return
        heapq.heappush(self._held, (at, next(self._arrivals), event))
        self._holding.set()
        soonest = heapq.heappop(self._held)[2] if len(self._held) > MAX_SCHEDULED else None
        self._arm()
        if soonest is not None:
            log.warning(
                "more than %d events wait for their apply_at: one goes early", MAX_SCHEDULED
            )
            await self._deliver(soonest)

    def drop(self, room: str | None = None) -> None:
        """Forget the held events (of `room` only, when given)."""
        self._held = [
            held for held in self._held if room is not None and held[2].get("room") != room
        ]
        heapq.heapify(self._held)
        self._arm()

    def keep_time(self, welcome: Mapping[str, Any], request: Request) -> Coroutine[Any, Any, None]:
        """Take a new connection's welcome as a sample now; the coroutine then pings over
        the connection while events are held, a round at once and one every
        `CLOCK_PING_INTERVAL`, until the connection ends."""
        self.clock.welcomed(welcome)
        return self._keep_time(request)

    async def _keep_time(self, request: Request) -> None:
        with contextlib.suppress(*CONNECTION_ERRORS):
            while True:
                await self._holding.wait()
                for _ in range(CLOCK_PINGS):
                    await self.clock.ping(request)
                self._arm()
                await asyncio.sleep(CLOCK_PING_INTERVAL)

    def _arm(self) -> None:
        """Wake up when the soonest held event is due, by the current estimate."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._held:
            self._holding.clear()
            return
        delay = max(0.0, (self._held[0][0] - self.clock.now()) / 1000)
        self._timer = asyncio.get_running_loop().call_later(delay, self._wake)

    def _wake(self) -> None:
        self._timer = None
        if self._handing is None or self._handing.done():
            self._handing = asyncio.create_task(self._hand_due())

    async def _hand_due(self) -> None:
        """Hand over every held event now due, in `apply_at` order, then wait for the next."""
        while self._held and self._held[0][0] <= self.clock.now():
            await self._deliver(heapq.heappop(self._held)[2])
        self._arm()


def _is_time(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
