"""One socket that stops reading must not hold up anyone else, and is closed with 4009."""

from __future__ import annotations

import asyncio
import socket

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import NodeFactory
from tests.support import Client, RedisServer, eventually, token

EVENTS = 400
RECEIVERS = 200


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def test_a_stalled_socket_is_shed_while_200_others_receive_everything(
    hub_node: NodeFactory, redis_server: RedisServer
) -> None:
    # The receivers send no heartbeats: on a busy machine the test outlasts the default
    # timeout, and a receiver closed 4008 is not what this test is about.
    quiet = {"broadcast_rate": 0, "heartbeat_timeout": 600}
    a = hub_node("a", redis_server.url, send_queue_bytes=65536, **quiet)
    b = hub_node("b", redis_server.url, **quiet)

    # A socket with a tiny receive buffer whose owner reads nothing until the node has shed
    # it: backpressure reaches the server almost at once.
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", a.port))
    stalled = await connect(
        a.ws_url,
        sock=raw,
        additional_headers={"Authorization": f"Bearer {token('device', 'slow')}"},
        max_queue=1,
        compression=None,
    )

    receivers = [
        await Client.connect(node, token("device", f"p{i}"))
        for i in range(RECEIVERS)
        for node in ((a, b)[i % 2],)
    ]
    counts = [0] * RECEIVERS

    async def receive(index: int) -> None:
        while counts[index] < EVENTS:
            event = await receivers[index].next_event(timeout=20)
            assert event["data"]["n"] == counts[index]
            counts[index] += 1

    def shed() -> bool:
        metrics = httpx.get(a.url + "/metrics").text
        return _metric(metrics, "hub_slow_consumers_total") == 1.0

    async def closed_once_shed() -> int | None:
        """Start reading as soon as the node has given up on the socket: it drops a peer
        that has not taken the close frame within 5 s, and the code is then lost."""
        await eventually(shed, 60, "the stalled socket to be counted as a slow consumer")
        try:
            async with asyncio.timeout(10):
                while True:
                    await stalled.recv()
        except ConnectionClosed:
            pass
        return stalled.close_code

    closing = asyncio.create_task(closed_once_shed())
    headers = {"Authorization": f"Bearer {token('operator', 'o1')}"}
    tick = "x" * 200
    # Every fourth event also goes, 60 KB large, to the stalled device alone: far more than
    # kernel buffers and HUB_SEND_QUEUE_BYTES can hold.
    bulk = "y" * 60000
    async with httpx.AsyncClient(base_url=b.url, headers=headers) as http:
        readers = [asyncio.create_task(receive(i)) for i in range(RECEIVERS)]
        for n in range(EVENTS):
            body = {"room": "devices", "event": "x.tick", "data": {"n": n, "pad": tick}}
            assert (await http.post("/v1/broadcast", json=body)).status_code == 202
            if n % 4 == 0:
                body = {"room": "device:slow", "event": "x.bulk", "data": {"pad": bulk}}
                assert (await http.post("/v1/broadcast", json=body)).status_code == 202
        await asyncio.gather(*readers)
    assert counts == [EVENTS] * RECEIVERS
    assert await closing == 4009
    for receiver in receivers:
        await receiver.close()
