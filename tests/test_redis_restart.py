"""A Redis restart, with Redis run as the deployments run it (an append-only file fsynced
every second): killed outright and started again on its files, it still has every room's
current state, the fleet, history and idempotency keys, the node comes back by itself, and
a client that resumes with the last id it saw and its epoch is told `recovered: true` and
handed what it missed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import NodeFactory
from tests.support import (
    HTTP,
    AppendOnlyRedis,
    Client,
    HubNode,
    eventually,
    history_ids,
    token,
)

OPERATOR = token("operator", "o1")
DASHBOARD = token("dashboard", "d1")
ROOM = "location:lobby"
REPLAYED = "idempotent-replayed"


@pytest.fixture
def redis_aof(tmp_path: Path) -> Iterator[AppendOnlyRedis]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = AppendOnlyRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _post(node: HubNode, event: str, key: str | None = None, **data: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {OPERATOR}", "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    body = orjson.dumps({"room": ROOM, "event": event, "data": data})
    return HTTP.post(f"{node.url}/v1/broadcast", content=body, headers=headers, timeout=10)


def _publish(node: HubNode, event: str, key: str | None = None, **data: Any) -> str:
    answer = _post(node, event, key, **data)
    assert answer.status_code == 202, answer.text
    event_id: str = answer.json()["ids"][ROOM]
    return event_id


def _read(node: HubNode, path: str) -> dict[str, Any]:
    answer = node.get(path, OPERATOR)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def _resume(
    client: Client, since: str, epoch: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Subscribe with `since` and `epoch`: the events replayed, which come before the
    answer, and the answer."""
    await client.send({"op": "subscribe", "ref": 1, "room": ROOM, "since": since, "epoch": epoch})
    replayed: list[dict[str, Any]] = []
    while (frame := await client.recv())["type"] == "event":
        replayed.append(frame)
    return replayed, frame


async def test_state_fleet_history_and_keys_outlive_a_killed_redis_and_a_resume_recovers(
    hub_node: NodeFactory, redis_aof: AppendOnlyRedis
) -> None:
    node = hub_node("a", redis_aof.url)
    device = await Client.connect(node, token("device", "p1", loc="lobby"))
    watcher = await Client.connect(node, DASHBOARD)
    epoch = (await watcher.subscribe(ROOM))["epoch"]
    seen = [_publish(node, "content.update", content_id="c", version=1)]
    seen.append(_publish(node, "alert", level="info", message="hello"))
    delivered = await watcher.events(lambda events: len(events) == len(seen), 5)
    assert [event["id"] for event in delivered] == seen
    await watcher.close()
    missed = [_publish(node, "content.update", content_id="c", version=2)]
    missed.append(_publish(node, "alert", "retried-1", level="info", message="again"))
    answered = _post(node, "alert", "retried-1", level="info", message="again")

    state = _read(node, f"/v1/rooms/{ROOM}/state")["events"]
    assert [event["data"]["version"] for event in state] == [2]
    assert history_ids(node, ROOM) == seen + missed
    assert [device["sub"] for device in _read(node, "/v1/devices")["devices"]] == ["p1"]

    redis_aof.stop()  # SIGKILL: no shutdown, no last write
    assert await device.closed_with() == 1012  # its rooms' subscription broke: resume
    redis_aof.start()
    await eventually(node.ready, 20, "the node to be ready again")

    assert _read(node, f"/v1/rooms/{ROOM}/state")["events"] == state
    assert history_ids(node, ROOM) == seen + missed
    assert [device["sub"] for device in _read(node, "/v1/devices")["devices"]] == ["p1"]
    retried = _post(node, "alert", "retried-1", level="info", message="again")
    assert (retried.status_code, retried.content) == (202, answered.content)
    assert retried.headers[REPLAYED] == "true"  # published once, not twice

    resumed = await Client.connect(node, DASHBOARD)
    replayed, ack = await _resume(resumed, seen[-1], epoch)
    assert (ack["type"], ack["recovered"], ack["epoch"]) == ("ack", True, epoch)
    assert [event["id"] for event in replayed] == missed
    await resumed.close()
