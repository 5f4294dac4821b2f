"""Sockets whose peer is gone are reaped: missed WebSocket pongs, and silent devices (4008)."""

from __future__ import annotations

import asyncio
import base64
import socket
import time

from tests.conftest import NodeFactory
from tests.support import Client, token


async def test_a_peer_that_stops_answering_pings_is_reaped(hub_node: NodeFactory) -> None:
    node = hub_node("pings", ping_interval=0.5, ping_timeout=0.5)
    raw = socket.create_connection(("127.0.0.1", node.port))
    key = base64.b64encode(b"0123456789abcdef").decode()
    raw.sendall(
        (
            f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token('dashboard', 'd1')}\r\n\r\n"
        ).encode()
    )
    raw.settimeout(10)
    received = b""
    started = time.monotonic()
    # Read everything (the 101, the welcome, pings) and never answer, until the server hangs up.
    while chunk := await asyncio.to_thread(raw.recv, 65536):
        received += chunk
    assert received.startswith(b"HTTP/1.1 101")
    assert time.monotonic() - started < 8
    raw.close()


async def test_a_silent_device_is_closed_4008_and_a_beating_one_is_not(
    hub_node: NodeFactory,
) -> None:
    node = hub_node("beats", heartbeat_interval=0.3, heartbeat_timeout=1.0)
    silent = await Client.connect(node, token("device", "quiet"))
    beating = await Client.connect(node, token("device", "busy"))
    dashboard = await Client.connect(node, token("dashboard", "d1"))
    started = time.monotonic()
    while time.monotonic() - started < 2.5:
        await beating.send({"op": "heartbeat", "data": {"status": "playing"}})
        await asyncio.sleep(0.3)
    assert await silent.closed_with(timeout=5) == 4008
    assert (await beating.request("ping"))["type"] == "pong"
    assert (await dashboard.request("ping"))["type"] == "pong"
    await beating.close()
    await dashboard.close()
