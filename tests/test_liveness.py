"""Sockets whose peer is gone are reaped: missed WebSocket pongs, and silent devices (4008).

The deadline table underneath is tested on its own: a sweep looks only at what expired.
"""

from __future__ import annotations

import asyncio
import time

from hub.liveness import Deadlines
from tests.conftest import NodeFactory
from tests.support import Client, raw_upgrade, token


def test_deadlines_expire_in_the_order_they_were_last_touched() -> None:
    deadlines: Deadlines[str] = Deadlines(timeout=10)
    for n, name in enumerate(["a", "b", "c", "d"]):
        deadlines.touch(name, now=float(n))
    deadlines.touch("a", now=5.0)  # a heartbeat pushes a's deadline back, to 15
    deadlines.discard("c")
    assert deadlines.expired(now=9.0) == []
    assert deadlines.expired(now=11.5) == ["b"]
    assert deadlines.expired(now=13.0) == ["d"]
    assert len(deadlines) == 1
    assert deadlines.expired(now=15.0) == ["a"]
    assert len(deadlines) == 0


def test_a_sweep_looks_at_the_expired_items_and_one_more() -> None:
    class Counted:
        """A deadline value that counts how often the sweep compares it."""

        looked = 0

        def __init__(self, value: float) -> None:
            self.value = value

        def __le__(self, now: float) -> bool:
            Counted.looked += 1
            return self.value <= now

        def __gt__(self, now: float) -> bool:
            return not self <= now

        def __add__(self, other: float) -> Counted:
            return Counted(self.value + other)

    deadlines: Deadlines[int] = Deadlines(timeout=10)
    for n in range(10_000):
        deadlines.touch(n, now=Counted(n * 0.001))  # type: ignore[arg-type]
    Counted.looked = 0
    assert deadlines.expired(now=10.0025) == [0, 1, 2]
    assert Counted.looked == 4


async def test_a_peer_that_stops_answering_pings_is_reaped_and_reported(
    hub_node: NodeFactory,
) -> None:
    node = hub_node("pings", ping_interval=0.5, ping_timeout=0.5)
    dashboard = await Client.watching_status(node)
    raw = raw_upgrade(node.port, timeout=10, bearer=token("device", "ghost"))
    assert (await dashboard.next_event())["event"] == "device.online"
    received = b""
    started = time.monotonic()
    # Read everything (the 101, the welcome, pings) and never answer, until the server hangs up.
    while chunk := await asyncio.to_thread(raw.recv, 65536):
        received += chunk
    assert received.startswith(b"HTTP/1.1 101")
    assert time.monotonic() - started < 8
    offline = await dashboard.next_event()
    assert offline["data"] == {"device": "ghost", "node": "pings", "reason": "ping_timeout"}
    raw.close()
    await dashboard.close()


async def test_a_silent_device_is_closed_4008_and_reported_offline_a_beating_one_is_not(
    hub_node: NodeFactory,
) -> None:
    node = hub_node("beats", heartbeat_interval=0.3, heartbeat_timeout=1.0)
    dashboard = await Client.watching_status(node)
    silent = await Client.connect(node, token("device", "quiet"))
    beating = await Client.connect(node, token("device", "busy"))
    started = time.monotonic()
    while time.monotonic() - started < 2.5:
        await beating.send({"op": "heartbeat", "data": {"status": "playing"}})
        await asyncio.sleep(0.3)
    assert await silent.closed_with(timeout=5) == 4008
    assert (await beating.request("ping"))["type"] == "pong"
    events = await dashboard.drain(within=0.5)
    lifecycle = [
        (event["event"], event["data"]["device"], event["data"].get("reason"))
        for event in events
        if event["event"] != "device.heartbeat"
    ]
    assert sorted(lifecycle, key=str) == sorted(
        [
            ("device.online", "quiet", None),
            ("device.online", "busy", None),
            ("device.offline", "quiet", "heartbeat_timeout"),
        ],
        key=str,
    )
    assert lifecycle[-1] == ("device.offline", "quiet", "heartbeat_timeout")
    await beating.close()
    await dashboard.close()
