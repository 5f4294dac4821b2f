"""Events handed over at their `apply_at`, by the hub's clock (the contract's "Broadcasts
that say what they reached, expire, and play together"): the clock's offset from the
welcome and from pongs, the schedule's order and bound, and `HubClient` against a real
node, its own clock right or 30 s off either way."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import hub.apply
from hub.apply import CLOCK_WINDOW, HubClock, Schedule, wall_ms
from hub.backoff import Backoff
from hub.client import Event, HubClient
from tests.support import HubNode, eventually, token

EARLY = 20.0
"""Ms a handover may come before `apply_at`: the offset's error on loopback, and timers."""
CORRECTED = 1000.0
"""Ms the clock's estimated offset may be off and still show the skew corrected (it is 30 s):
how late a handover comes is recorded, never asserted (a shared machine is slow at times)."""
AHEAD = 4000.0
"""Ms ahead of now that the broadcasts of these tests are to be applied."""
QUICK = Backoff(base=0.05, cap=0.2)


class ManualClock:
    """A local clock that moves only when told to."""

    def __init__(self, ms: float = 1_000_000.0) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms


def test_without_a_sample_the_hubs_clock_is_the_local_one() -> None:
    clock = HubClock(ManualClock(5000))
    assert (clock.offset, clock.now()) == (0.0, 5000)


def test_the_welcomes_time_sets_the_offset_until_a_pong_comes() -> None:
    local = ManualClock(1000)
    clock = HubClock(local)
    clock.welcomed({"type": "welcome", "time": 31_000})
    assert clock.offset == 30_000
    local.ms += 500
    assert clock.now() == 31_500
    clock.answered(40_000, sent=1500, received=1520)
    assert clock.offset == 40_000 - 1510


def test_a_pong_counts_from_halfway_through_its_round_trip() -> None:
    clock = HubClock(ManualClock())
    clock.answered(10_050, sent=1000, received=1100)
    assert clock.offset == 9000


def test_of_the_recent_samples_the_one_with_the_shortest_round_trip_wins() -> None:
    clock = HubClock(ManualClock(4000))
    clock.answered(10_000, sent=1000, received=1100)  # 100 ms there and back
    clock.answered(10_000, sent=2000, received=2010)  # 10 ms
    clock.answered(10_000, sent=3000, received=3050)  # 50 ms
    clock.welcomed({"time": 10_000})
    assert clock.offset == 10_000 - 2005


def test_an_old_sample_gives_way_to_a_recent_one() -> None:
    local = ManualClock(0)
    clock = HubClock(local)
    clock.answered(5000, sent=0, received=2)
    local.ms = CLOCK_WINDOW + 100
    clock.welcomed({"time": local.ms + 7000})  # a later welcome, of a node 7 s ahead
    assert clock.offset == 7000
    clock.answered(local.ms + 8000, sent=local.ms - 100, received=local.ms + 100)
    assert clock.offset == 8000
    local.ms += 2 * CLOCK_WINDOW
    assert clock.offset == 8000  # none recent: the newest


@pytest.mark.parametrize(
    "pong",
    [
        {"type": "pong", "ref": 1},  # an older hub
        {"type": "pong", "ref": 1, "time": "soon"},
        {"type": "pong", "ref": 1, "time": True},
        {"type": "error", "ref": 1, "code": "rate_limited", "time": 1},
    ],
)
async def test_a_pong_without_a_time_is_no_sample(pong: dict[str, Any]) -> None:
    clock = HubClock(ManualClock(1000))

    async def request(frame: dict[str, Any]) -> Event:
        assert frame == {"op": "ping"}
        return pong

    await clock.ping(request)
    assert clock.offset == 0.0


def test_a_round_trip_the_local_clock_ran_backwards_through_is_no_sample() -> None:
    clock = HubClock(ManualClock())
    clock.answered(5000, sent=1000, received=900)
    assert clock.offset == 0.0


class Handed:
    """What a schedule hands over, and when (this machine's clock, ms)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float]] = []

    async def __call__(self, event: Event) -> None:
        self.events.append((event["id"], wall_ms()))

    @property
    def ids(self) -> list[str]:
        return [event_id for event_id, _ in self.events]


def at(event_id: str, apply_at: float | None, room: str = "wall") -> Event:
    event: Event = {"type": "event", "room": room, "event": "content.update", "id": event_id}
    if apply_at is not None:
        event["apply_at"] = apply_at
    return event


async def test_held_events_are_handed_over_at_their_apply_at_in_that_order() -> None:
    handed = Handed()
    schedule = Schedule(HubClock(), handed)
    now = wall_ms()
    when = {"3": now + 300, "1": now + 100, "2": now + 200}
    for event_id, apply_at in when.items():
        await schedule.hand(at(event_id, apply_at))
    assert handed.events == []
    assert len(schedule) == 3
    await eventually(lambda: len(handed.events) == 3, 5, "three handovers")
    assert handed.ids == ["1", "2", "3"]
    for event_id, handed_at in handed.events:
        assert handed_at >= when[event_id] - EARLY
    assert len(schedule) == 0


async def test_an_event_without_apply_at_or_with_one_past_is_handed_over_at_once() -> None:
    handed = Handed()
    schedule = Schedule(HubClock(), handed)
    await schedule.hand(at("1", wall_ms() + 60_000))
    await schedule.hand(at("2", None))
    await schedule.hand(at("3", wall_ms() - 1))
    await schedule.hand(at("4", float("nan")))
    assert handed.ids == ["2", "3", "4"]
    schedule.drop()


async def test_the_hubs_clock_decides_not_the_local_one() -> None:
    handed = Handed()
    clock = HubClock(lambda: wall_ms() + 30_000)  # 30 s fast
    clock.welcomed({"time": wall_ms()})
    schedule = Schedule(clock, handed)
    apply_at = wall_ms() + 200
    await schedule.hand(at("1", apply_at))  # past by the local clock, not by the hub's
    assert handed.events == []
    await eventually(lambda: len(handed.events) == 1, 5, "the handover")
    assert handed.events[0][1] >= apply_at - EARLY


async def test_past_the_bound_the_event_due_soonest_is_handed_over_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hub.apply, "MAX_SCHEDULED", 3)
    handed = Handed()
    schedule = Schedule(HubClock(), handed)
    later = wall_ms() + 60_000
    for n in (1, 2, 3):
        await schedule.hand(at(f"{n}", later + n * 1000))
    await schedule.hand(at("soonest", later))
    assert handed.ids == ["soonest"]
    await schedule.hand(at("last", later + 9000))
    assert handed.ids == ["soonest", "1"]
    assert len(schedule) == 3
    schedule.drop()


async def test_dropped_events_are_never_handed_over() -> None:
    handed = Handed()
    schedule = Schedule(HubClock(), handed)
    apply_at = wall_ms() + 100
    await schedule.hand(at("1", apply_at))
    await schedule.hand(at("2", apply_at, room="elsewhere"))
    await schedule.hand(at("3", apply_at + 10))
    schedule.drop("wall")
    assert len(schedule) == 1
    await eventually(lambda: handed.ids == ["2"], 5, "the other room's event")
    await schedule.hand(at("4", wall_ms() + 100))
    schedule.drop()
    await asyncio.sleep(0.3)
    assert handed.ids == ["2"]


async def test_it_pings_only_while_events_are_held_and_a_pong_moves_the_handover() -> None:
    """The welcome says the hub's clock is the local one; the pongs then say it is 1.5 s
    ahead: an event held for 2 s by the first estimate goes after 0.5 s."""
    handed = Handed()
    schedule = Schedule(HubClock(), handed)
    pings: list[dict[str, Any]] = []

    async def request(frame: dict[str, Any]) -> Event:
        pings.append(frame)
        return {"type": "pong", "ref": len(pings), "time": wall_ms() + 1500}

    timing = asyncio.create_task(schedule.keep_time({"time": wall_ms()}, request))
    await asyncio.sleep(0.1)
    assert pings == []
    start = wall_ms()
    await schedule.hand(at("1", start + 2000))
    await eventually(lambda: len(handed.events) == 1, 5, "the handover")
    assert pings == [{"op": "ping"}] * hub.apply.CLOCK_PINGS
    assert handed.events[0][1] >= start + 500 - EARLY
    timing.cancel()


async def test_pinging_ends_with_the_connection() -> None:
    schedule = Schedule(HubClock(), Handed())

    async def request(frame: dict[str, Any]) -> Event:
        raise ConnectionError("not connected")

    await schedule.hand(at("1", wall_ms() + 60_000))
    await asyncio.wait_for(schedule.keep_time({"time": wall_ms()}, request), 5)
    schedule.drop()


class Player:
    """A `HubClient` that notes when (this machine's clock, which is the node's) its handler
    runs for each event."""

    def __init__(
        self, node: HubNode, bearer: str, clock: Callable[[], float] = wall_ms, **options: Any
    ) -> None:
        self.handed: list[tuple[Event, float]] = []
        self.client = HubClient(
            [node.ws_url],
            bearer,
            on_event=lambda event: self.handed.append((event, wall_ms())),
            backoff=QUICK,
            clock=clock,
            **options,
        )
        self._running: asyncio.Task[None] | None = None

    async def start(self) -> Player:
        self._running = asyncio.create_task(self.client.run())
        await asyncio.wait_for(self.client.connected.wait(), 10)
        return self

    async def stop(self) -> None:
        await self.client.stop()
        assert self._running is not None
        await asyncio.wait_for(self._running, 10)

    def times(self, event: str) -> list[float]:
        return [handed_at for e, handed_at in self.handed if e["event"] == event]


DATA = {"content.update": {"content_id": "video-7"}, "command": {"name": "play"}}
"""Data of the typed events these tests broadcast; `x.*` events take any."""


def skewed(skew: float) -> Callable[[], float]:
    """This machine's clock, `skew` ms off."""
    return lambda: wall_ms() + skew


def broadcast(node: HubNode, operator: str, room: str, event: str, **body: Any) -> str:
    answer = node.broadcast(operator, room=room, event=event, data=DATA.get(event, {}), **body)
    assert answer.status_code == 202, answer.text
    event_id: str = answer.json()["ids"][room]
    return event_id


async def test_a_broadcast_is_handed_over_at_apply_at_by_the_hubs_clock_however_wrong_the_local_one(
    shared_single: HubNode, tenant: str
) -> None:
    operator, dashboard = token("operator", "o1", tenant), token("dashboard", "d1", tenant)
    players = {
        skew: await Player(shared_single, dashboard, skewed(skew), rooms=["wall"]).start()
        for skew in (0.0, 30_000.0, -30_000.0)
    }
    apply_at = round(wall_ms() + AHEAD)
    broadcast(shared_single, operator, "wall", "content.update", apply_at=apply_at)

    async def all_handed() -> bool:
        return all(player.times("content.update") for player in players.values())

    await eventually(all_handed, 10, "every player's handover")
    for skew, player in players.items():
        [(event, handed_at)] = player.handed
        assert event["apply_at"] == apply_at
        assert handed_at >= apply_at - EARLY, (skew, handed_at - apply_at)
        assert abs(player.client.clock.offset + skew) < CORRECTED, player.client.clock.offset
        await player.stop()


async def test_a_held_command_is_received_at_once_and_done_after_its_handler_at_apply_at(
    shared_single: HubNode, tenant: str
) -> None:
    operator, dashboard = token("operator", "o1", tenant), token("dashboard", "d1", tenant)
    device = token("device", "screen-1", tenant, loc="lobby")
    player = await Player(shared_single, device, acknowledge_commands=True).start()
    apply_at = round(wall_ms() + AHEAD)
    event_id = broadcast(shared_single, operator, "location:lobby", "command", apply_at=apply_at)

    def receipt() -> dict[str, Any]:
        answer = shared_single.get(
            f"/v1/rooms/location:lobby/events/{event_id}/receipts", dashboard
        )
        assert answer.status_code == 200, answer.text
        listed: list[dict[str, Any]] = answer.json()["receipts"]
        return listed[0] if listed else {}

    await eventually(lambda: receipt().get("status") == "received", 5, "the received receipt")
    assert player.handed == []
    await eventually(lambda: receipt().get("status") == "done", 10, "the done receipt")
    [handed_at] = player.times("command")
    assert handed_at >= apply_at - EARLY
    assert receipt()["time"] >= apply_at - EARLY
    await player.stop()


async def test_a_held_event_outlives_a_reconnect_and_is_handed_over_once(
    shared_single: HubNode, tenant: str
) -> None:
    operator, dashboard = token("operator", "o1", tenant), token("dashboard", "d1", tenant)
    player = await Player(shared_single, dashboard, rooms=["wall"]).start()
    apply_at = round(wall_ms() + AHEAD)
    broadcast(shared_single, operator, "wall", "content.update", apply_at=apply_at)
    broadcast(shared_single, operator, "wall", "x.marker")  # handed at once: the first is held
    await eventually(lambda: bool(player.times("x.marker")), 5, "the marker")
    assert player.times("content.update") == []
    first = player.client.welcome
    await player.client.drop()

    async def reconnected() -> bool:
        return player.client.welcome is not first and player.client.connected.is_set()

    await eventually(reconnected, 10, "a new connection")
    assert wall_ms() < apply_at  # still held
    await eventually(lambda: bool(player.times("content.update")), 10, "the held event")
    [handed_at] = player.times("content.update")
    assert handed_at >= apply_at - EARLY
    await asyncio.sleep(0.2)
    assert [event["event"] for event, _ in player.handed] == ["x.marker", "content.update"]
    await player.stop()


async def test_a_client_that_stops_drops_the_events_it_held(
    shared_single: HubNode, tenant: str
) -> None:
    operator, dashboard = token("operator", "o1", tenant), token("dashboard", "d1", tenant)
    player = await Player(shared_single, dashboard, rooms=["wall"]).start()
    apply_at = round(wall_ms() + 500)
    broadcast(shared_single, operator, "wall", "content.update", apply_at=apply_at)
    broadcast(shared_single, operator, "wall", "x.marker")
    await eventually(lambda: bool(player.times("x.marker")), 5, "the marker")
    await player.stop()
    await asyncio.sleep(max(0.0, (apply_at - wall_ms()) / 1000) + 0.3)
    assert player.times("content.update") == []
