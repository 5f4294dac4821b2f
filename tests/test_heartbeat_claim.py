"""A device's own heartbeat interval (its token's `heartbeat` claim): the welcome says it,
the hub pings and reaps the device by it, and a claim outside the node's bounds is 401.

The watch underneath is tested in the process: devices with different timeouts expire in
their own order, and a heartbeat moves only its own device. The wire cost tool is run
small, as the load tools are."""

from __future__ import annotations

import asyncio
import math
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest

from hub.disconnect import HEARTBEAT_TIMEOUT, Disconnect
from hub.liveness import HeartbeatWatch
from tests.conftest import NodeFactory
from tests.inprocess import running
from tests.support import SECRET, Client, HubNode, raw_upgrade, token
from tests.test_cli import run_hub, the_reason

ROOT = Path(__file__).resolve().parent.parent
CLOSE_4008 = b"\x88\x13\x0f\xa8heartbeat timeout"
"""The close frame of a silent device, as the hub frames it."""


async def test_a_claimed_interval_is_the_welcomes_with_a_timeout_in_the_nodes_ratio(
    shared_single: HubNode, tenant: str
) -> None:
    claimed = await Client.connect(shared_single, token("device", "p7", tenant, heartbeat=7))
    plain = await Client.connect(shared_single, token("device", "p15", tenant))
    assert claimed.welcome["heartbeat"] == {"interval": 7, "timeout": 21}
    assert plain.welcome["heartbeat"] == {"interval": 15, "timeout": 45}
    await claimed.close()
    await plain.close()


def _everything(raw: socket.socket) -> bytes:
    """What the node sends until it hangs up."""
    received = b""
    while chunk := raw.recv(65536):
        received += chunk
    raw.close()
    return received


async def test_a_short_claim_is_pinged_and_reaped_by_its_own_timeout_and_reported_once(
    hub_node: NodeFactory,
) -> None:
    node = hub_node("claims", heartbeat_min=1)
    dashboard = await Client.watching_status(node)
    plain = await Client.connect(node, token("device", "plain"))
    assert (await dashboard.next_event())["data"]["device"] == "plain"
    started = time.monotonic()
    # Claim 1 s: a 3 s timeout and a ping every 1.33 s; it reads and never answers.
    raw = raw_upgrade(node.port, timeout=30, bearer=token("device", "short", heartbeat=1))
    received = await asyncio.to_thread(_everything, raw)
    silent_for = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 101")
    assert b'"heartbeat":{"interval":1,"timeout":3.0}' in received
    # Pinged at the claim's pace (1.33 s), not the node's 20 s; one unanswered ping is all
    # a peer gets until its pong deadline.
    assert b"\x89\x04" in received
    assert received.endswith(CLOSE_4008)
    assert 2.5 < silent_for < 40, "closed by its own 3 s timeout, not the node's 45 s"
    events = await dashboard.drain(within=2.0)
    lifecycle = [
        (event["event"], event["data"].get("reason"))
        for event in events
        if event["data"]["device"] == "short" and event["event"] != "device.heartbeat"
    ]
    assert lifecycle == [("device.online", None), ("device.offline", "heartbeat_timeout")]
    assert (await plain.request("ping"))["type"] == "pong"
    await plain.close()
    await dashboard.close()


def _refusal(node: HubNode, bearer: str) -> tuple[bytes, dict[str, Any]]:
    answer = _everything(raw_upgrade(node.port, timeout=30, bearer=bearer))
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], orjson.loads(body)


BOUNDS = "claim 'heartbeat' must be a whole number of seconds from 5 to 300"


@pytest.mark.parametrize(
    "claim",
    [0, 4, 301, -15, 7.5, 15.0, "15", True, False, 10**30, 10**1000, math.inf, math.nan, [15]],
    ids=repr,
)
def test_a_claim_outside_the_bounds_or_not_whole_seconds_is_refused_naming_it(
    refusing: HubNode, claim: Any
) -> None:
    status, body = _refusal(refusing, token("device", "odd", heartbeat=claim))
    assert status == b"HTTP/1.1 401 Unauthorized"
    assert body["error"]["code"] == "unauthorized"
    assert body["error"]["message"].startswith(BOUNDS), body


@pytest.mark.parametrize("role", ["dashboard", "operator"])
def test_a_claim_on_a_token_that_sends_no_heartbeats_is_refused(
    refusing: HubNode, role: str
) -> None:
    status, body = _refusal(refusing, token(role, "person", heartbeat=15))
    assert status == b"HTTP/1.1 401 Unauthorized"
    assert body["error"]["message"] == "claim 'heartbeat' is for device tokens only"


async def test_a_null_claim_is_no_claim(shared_single: HubNode, tenant: str) -> None:
    device = await Client.connect(shared_single, token("device", "p", tenant, heartbeat=None))
    assert device.welcome["heartbeat"]["interval"] == 15
    await device.close()


async def test_a_claimed_socket_is_pinged_in_the_nodes_ratio_and_keeps_it_on_refresh() -> None:
    async with running() as hub:
        claimed = await hub.connect(token("device", "p240", heartbeat=240))
        plain = await hub.connect(token("device", "p"))
        assert claimed.wire.ping_interval == 320  # 240 x HUB_PING_INTERVAL 20 / 15
        assert plain.wire.ping_interval is None  # the node's, left to the transport
        fresh = token("device", "p240", heartbeat=60)
        assert (await claimed.answer({"op": "refresh", "token": fresh, "ref": 1}))["type"] == "ack"
        assert claimed.wire.ping_interval == 320
        assert claimed.wire.frames()[0]["heartbeat"] == {"interval": 240, "timeout": 720}


class _Device:
    """A watched socket that records its close."""

    def __init__(self, name: str, closes: list[str]) -> None:
        self.name = name
        self._closes = closes
        self.closed = asyncio.Event()

    def close(self, cause: Disconnect) -> None:
        assert cause is HEARTBEAT_TIMEOUT
        self._closes.append(self.name)
        self.closed.set()


async def test_devices_of_different_timeouts_expire_each_by_its_own() -> None:
    now = [0.0]
    closes: list[str] = []
    watch = HeartbeatWatch(timeout=45, shortest=3)
    watch.start(clock=lambda: now[0])
    try:
        node, short, long, short_too = (
            _Device(name, closes) for name in ("node", "short", "long", "short-too")
        )
        watch.beat(node)  # unclaimed: the node's timeout, 45
        watch.watch(short, 3)
        watch.watch(long, 900)
        now[0] = 1.0
        watch.watch(short_too, 3)
        assert watch.silent() == []
        now[0] = 3.0
        assert watch.silent() == [short]
        watch.beat(short_too)  # from 4 to 6, alone: the others keep their deadlines
        now[0] = 5.9
        assert watch.silent() == []
        now[0] = 6.0
        assert watch.silent() == [short_too]
        now[0] = 7.0
        watch.beat(long)  # from 900 to 907
        now[0] = 45.0
        assert watch.silent() == [node]
        now[0] = 906.9
        assert watch.silent() == []
        assert len(watch) == 1
        now[0] = 907.0
        assert watch.silent() == [long]
        assert len(watch) == 0
        assert closes == []  # the sweep closes; `silent` only takes them out
    finally:
        await watch.stop()


async def test_a_forgotten_device_is_never_taken_out() -> None:
    now = [0.0]
    closes: list[str] = []
    watch = HeartbeatWatch(timeout=45, shortest=3)
    watch.start(clock=lambda: now[0])
    try:
        devices = [_Device(f"d{claim}", closes) for claim in range(5, 305)]
        for claim, device in enumerate(devices, start=5):
            watch.watch(device, claim * 3.0)
        for device in devices[::2]:
            watch.forget(device)
        now[0] = 10_000.0
        assert watch.silent() == devices[1::2]
        assert len(watch) == 0
    finally:
        await watch.stop()


async def test_the_sweep_closes_a_silent_device_at_its_own_timeout() -> None:
    closes: list[str] = []
    watch = HeartbeatWatch(timeout=45, shortest=0.2)
    watch.start()
    try:
        quick = _Device("quick", closes)
        watch.watch(quick, 0.2)
        watch.beat(_Device("slow", closes))
        await asyncio.wait_for(quick.closed.wait(), 10)
        assert closes == ["quick"]
    finally:
        await watch.stop()


def test_hub_token_puts_a_claim_in_and_refuses_what_the_hub_would() -> None:
    args = ["token", "--role=device", "--sub=p1", "--tenant=acme"]
    minted = run_hub(*args, "--heartbeat=240", HUB_JWT_SECRET=SECRET)
    assert minted.returncode == 0, minted.stderr
    assert jwt.decode(minted.stdout.strip(), SECRET, algorithms=["HS256"])["heartbeat"] == 240
    refused = the_reason(*args, "--heartbeat=301", HUB_JWT_SECRET=SECRET)
    assert refused == (
        f"hub: the hub would refuse this token: {BOUNDS} (HUB_HEARTBEAT_MIN to HUB_HEARTBEAT_MAX)"
    )
    widened = run_hub(*args, "--heartbeat=900", HUB_JWT_SECRET=SECRET, HUB_HEARTBEAT_MAX="900")
    assert widened.returncode == 0, widened.stderr
    person = the_reason(
        "token", "--role=dashboard", "--sub=d", "--tenant=acme", "--heartbeat=15",
        HUB_JWT_SECRET=SECRET,
    )  # fmt: skip
    assert person.endswith("claim 'heartbeat' is for device tokens only")
    crossed = {"HUB_HEARTBEAT_MIN": "400", "HUB_HEARTBEAT_MAX": "300"}
    bad_bounds = the_reason(*args, "--heartbeat=15", HUB_JWT_SECRET=SECRET, **crossed)
    assert bad_bounds == "hub: HUB_HEARTBEAT_MIN must not be more than HUB_HEARTBEAT_MAX"
    for bad in ("7.5", "-1", "soon"):
        result = run_hub(*args, f"--heartbeat={bad}", HUB_JWT_SECRET=SECRET)
        assert result.returncode == 2
        assert f"argument --heartbeat: {bad!r} is not a whole number of seconds" in result.stderr


@pytest.mark.parametrize("transport", ["websocket", "stream"])
def test_the_wire_cost_tool_counts_both_ways_and_extrapolates_a_month(transport: str) -> None:
    command = [sys.executable, "-m", "loadtest.wirecost", "--heartbeat", "1", "--cycles", "2"]
    command += ["--transport", transport]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    (line,) = done.stdout.splitlines()
    fields = dict(re.findall(r"(\w+)=(\S+)", line))
    assert fields["transport"] == transport
    assert (fields["heartbeat"], fields["cycles"]) == ("1", "2")
    handshake = int(fields["handshake_up"]) + int(fields["handshake_down"])
    up, down = float(fields["cycle_up"]), float(fields["cycle_down"])
    assert int(fields["handshake_up"]) > 0
    assert int(fields["handshake_down"]) > 0
    assert up > 0  # heartbeats (and pongs, or POSTs)
    assert down > 0  # the hub's pings (or the POSTs' answers and comments)
    per_day = float(fields["cycles_per_day"])
    assert per_day == 86400
    month = (handshake + 30 * per_day * (up + down)) / 1e6
    assert float(fields["mb_per_month"]) == pytest.approx(month, abs=0.001)
