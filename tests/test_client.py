"""The client library and `hub listen`: nothing lost or repeated across drops and node death."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys

import httpx
import orjson
import pytest

from hub.backoff import Backoff
from hub.client import Event, HubClient
from tests.conftest import NodeFactory
from tests.support import SECRET, HubNode, RedisServer, token, wait_until

OPERATOR = token("operator", "o1")
CLIENTS = 50
PER_PUBLISHER = 150


class Recorder:
    def __init__(self, node_urls: list[str], index: int) -> None:
        self.ids: list[str] = []
        self.lost: list[str] = []
        self.client = HubClient(
            node_urls[index % 2 :] + node_urls[: index % 2],
            token("dashboard", f"watcher-{index}"),
            rooms=["feed"],
            on_event=self.ids_of,
            on_lost=self.lost.append,
            backoff=Backoff(base=0.05, cap=0.5),
        )

    def ids_of(self, event: Event) -> None:
        self.ids.append(event["id"])


async def _publisher(node: HubNode, origin: int, published: list[str]) -> None:
    """Publish numbered events through one node; while it is down, wait and try again."""
    async with httpx.AsyncClient(base_url=node.url) as http:
        n = 0
        while n < PER_PUBLISHER:
            body = {"room": "feed", "event": "x.tick", "data": {"origin": origin, "n": n}}
            try:
                answer = await http.post(
                    "/v1/broadcast", json=body, headers={"Authorization": f"Bearer {OPERATOR}"}
                )
            except httpx.HTTPError:
                await asyncio.sleep(0.05)
                continue
            if answer.status_code == 202:
                published.append(answer.json()["ids"]["feed"])
                n += 1
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("trouble", ["sockets cut at random", "a node killed and restarted"])
async def test_fifty_resuming_clients_end_with_the_exact_history(
    hub_node: NodeFactory, redis_server: RedisServer, trouble: str
) -> None:
    a = hub_node("a", redis_server.url, broadcast_rate=0)
    b = hub_node("b", redis_server.url, broadcast_rate=0)
    recorders = [Recorder([a.ws_url, b.ws_url], i) for i in range(CLIENTS)]
    runs = [asyncio.create_task(r.client.run()) for r in recorders]
    await asyncio.wait_for(asyncio.gather(*(r.client.connected.wait() for r in recorders)), 30)

    published: list[str] = []
    publishing = asyncio.gather(_publisher(a, 0, published), _publisher(b, 1, published))

    async def cut_at_random() -> None:
        if trouble != "sockets cut at random":
            return
        rng = random.Random(7)
        for _ in range(60):
            await asyncio.sleep(rng.uniform(0.01, 0.08))
            await rng.choice(recorders).client.drop()

    async def kill_and_restart_a() -> None:
        if trouble != "a node killed and restarted":
            return
        await asyncio.sleep(1.5)
        await asyncio.to_thread(a.stop, signal.SIGKILL)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(a.start)

    await asyncio.gather(publishing, cut_at_random(), kill_and_restart_a())
    assert len(published) == 2 * PER_PUBLISHER

    history = httpx.get(
        f"{b.url}/v1/rooms/feed/history",
        params={"limit": 1000},
        headers={"Authorization": f"Bearer {OPERATOR}"},
    ).json()
    full = [event["id"] for event in history["events"]]
    # A broadcast in flight when its node is killed may be accepted without its answer
    # reaching the publisher, who then sends it again: history may hold that one extra.
    assert set(published) <= set(full)
    extra = len(full) - len(published)
    assert extra == 0 or (trouble == "a node killed and restarted" and extra <= 1)

    def everyone_has_everything() -> bool:
        return all(len(r.ids) >= len(full) for r in recorders)

    await asyncio.to_thread(wait_until, everyone_has_everything, 30, "every client to catch up")
    for recorder in recorders:
        assert recorder.ids == full
        assert recorder.lost == []
        await recorder.client.stop()
    for run in runs:
        await asyncio.wait_for(run, 10)


async def test_hub_listen_prints_events_as_json_lines(single: HubNode) -> None:
    env = {**os.environ, "HUB_TOKEN": token("dashboard", "d1"), "HUB_JWT_SECRET": SECRET}
    listener = subprocess.Popen(
        [sys.executable, "-m", "hub", "listen", "--room", "alerts", "--url", single.ws_url],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None
        heard = asyncio.ensure_future(asyncio.to_thread(listener.stdout.readline))
        # The listener subscribes after it starts: publish until it has heard one.
        async with asyncio.timeout(20):
            while not heard.done():
                single.broadcast(OPERATOR, room="alerts", event="alert", data=_alert())
                await asyncio.wait([heard], timeout=0.5)
        event = orjson.loads(heard.result())
        assert (event["room"], event["event"]) == ("alerts", "alert")
    finally:
        listener.terminate()
        listener.wait(timeout=10)


def _alert() -> dict[str, str]:
    return {"level": "info", "message": "hello"}
