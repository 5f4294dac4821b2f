"""Delivery receipts (the contract's "Delivery receipts"): the `receipt` op, the
`delivery.receipt` status event, and GET /v1/rooms/{room}/events/{id}/receipts, on one node
and across nodes through Redis; HubClient's receipts and its device's command receipts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from hub.backoff import Backoff
from hub.client import HubClient
from tests.conftest import Start
from tests.support import Client, HubNode, eventually, metric, token

OPERATOR = token("operator", "o1")
DASHBOARD = token("dashboard", "d1")
LOBBY = "location:lobby"


def command(
    node: HubNode, room: str = LOBBY, name: str = "reboot", operator: str = OPERATOR
) -> str:
    answer = node.broadcast(operator, room=room, event="command", data={"name": name})
    assert answer.status_code == 202, answer.text
    event_id: str = answer.json()["ids"][room]
    return event_id


def receipts(node: HubNode, event_id: str, room: str = LOBBY) -> list[dict[str, Any]]:
    answer = node.get(f"/v1/rooms/{room}/events/{event_id}/receipts", DASHBOARD)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["room"], body["id"]) == (room, event_id)
    listed: list[dict[str, Any]] = body["receipts"]
    return listed


async def test_a_receipt_is_stored_announced_and_replaced_by_the_next(start: Start) -> None:
    node = start()
    status = await Client.watching_status(node)
    device = await Client.connect(node, token("device", "p1", loc="lobby"))
    event_id = command(node)
    assert (await device.next_event())["id"] == event_id
    answer = await device.request("receipt", room=LOBBY, id=event_id, status="received")
    assert answer == {"type": "ack", "ref": answer["ref"], "room": LOBBY, "id": event_id}
    announced = await status.events(
        lambda seen: any(e["event"] == "delivery.receipt" for e in seen), 5
    )
    receipt = next(e for e in announced if e["event"] == "delivery.receipt")
    assert receipt["data"] == {
        "sub": "p1",
        "role": "device",
        "room": LOBBY,
        "id": event_id,
        "status": "received",
    }
    done = await device.request(
        "receipt", room=LOBBY, id=event_id, status="done", data={"took_ms": 40}
    )
    assert done["type"] == "ack"
    await eventually(lambda: metric(node, 'hub_receipts_total{status="done"}') == 1, 5, "count")
    assert metric(node, 'hub_receipts_total{status="received"}') == 1
    watcher = await Client.connect(node, DASHBOARD)
    await watcher.subscribe(LOBBY)
    assert (await watcher.request("receipt", room=LOBBY, id=event_id, status="received"))[
        "type"
    ] == "ack"
    listed = receipts(node, event_id)
    assert [(r["sub"], r["role"], r["status"]) for r in listed] == [
        ("p1", "device", "done"),
        ("d1", "dashboard", "received"),
    ]
    assert listed[0]["data"] == {"took_ms": 40}
    assert isinstance(listed[0]["time"], int)
    assert "data" not in listed[1]


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"room": LOBBY, "id": "1-0", "status": "done"}, "not_found"),
        ({"room": "location:hall", "id": "1-0", "status": "done"}, "forbidden"),
        ({"room": LOBBY, "id": "yesterday", "status": "done"}, "bad_request"),
        ({"room": LOBBY, "id": "1-0", "status": "maybe"}, "bad_request"),
        ({"room": LOBBY, "id": "1-0", "status": "done", "data": [1]}, "bad_request"),
        ({"room": LOBBY, "status": "done"}, "bad_request"),
        ({"room": LOBBY, "id": "1-0", "status": "done", "data": {"x": "y" * 3000}}, "too_large"),
    ],
)
async def test_a_receipt_that_cannot_be_taken_is_refused(
    shared_single: HubNode, fields: dict[str, Any], code: str
) -> None:
    device = await Client.connect(shared_single, token("device", "p1", loc="lobby"))
    answer = await device.request("receipt", **fields)
    assert (answer["type"], answer["code"]) == ("error", code)
    await device.close()


async def test_a_receipt_for_an_event_history_dropped_is_not_found(start: Start) -> None:
    node = start(history_size=1)
    device = await Client.connect(node, token("device", "p1", loc="lobby"))
    first = command(node)
    command(node, name="update")
    answer = await device.request("receipt", room=LOBBY, id=first, status="done")
    assert answer["code"] == "not_found"
    assert receipts(node, first) == []


async def test_receipts_past_their_rate_are_refused(shared_single: HubNode, tenant: str) -> None:
    device = await Client.connect(shared_single, token("device", "p1", tenant, loc="lobby"))
    event_id = command(shared_single, operator=token("operator", "o1", tenant))
    codes = []
    for _ in range(25):
        answer = await device.request("receipt", room=LOBBY, id=event_id, status="received")
        codes.append(answer.get("code", answer["type"]))
    assert codes[:20] == ["ack"] * 20
    assert "rate_limited" in codes[20:]
    await device.close()  # not left open on the shared node


def test_who_may_read_receipts_and_what_an_id_must_be(shared_single: HubNode) -> None:
    path = f"/v1/rooms/{LOBBY}/events/1-0/receipts"
    assert shared_single.get(path, token("device", "p1")).status_code == 403
    assert shared_single.get(path, OPERATOR).json()["receipts"] == []
    bad = shared_single.get(f"/v1/rooms/{LOBBY}/events/latest/receipts", OPERATOR)
    assert bad.status_code == 400


async def test_a_hundred_devices_on_two_nodes_acknowledge_a_command(
    pair: tuple[HubNode, HubNode],
) -> None:
    """HubClient devices with `acknowledge_commands`: each sends `received`, runs the
    handler, and sends `done` (or `failed` when it raises); every node lists them all."""
    a, b = pair
    ran: list[str] = []

    def handler(sub: str) -> Callable[[dict[str, Any]], None]:
        def handle(event: dict[str, Any]) -> None:
            ran.append(sub)
            if sub == "p0":
                raise RuntimeError("cannot reboot")

        return handle

    devices = [
        HubClient(
            [(a if n % 2 else b).ws_url],
            token("device", f"p{n}", loc="lobby"),
            on_event=handler(f"p{n}"),
            acknowledge_commands=True,
            backoff=Backoff(base=0.05, cap=0.5),
        )
        for n in range(100)
    ]
    tasks = [asyncio.create_task(device.run()) for device in devices]
    try:
        await asyncio.gather(*(device.connected.wait() for device in devices))
        event_id = command(a)
        await eventually(
            lambda: [r["status"] for r in receipts(b, event_id)].count("done") == 99,
            20,
            "99 devices done",
        )
        listed = {r["sub"]: r["status"] for r in receipts(a, event_id)}
        assert len(listed) == 100
        assert listed["p0"] == "failed"
        assert sorted(ran) == sorted(f"p{n}" for n in range(100))
    finally:
        for device in devices:
            await device.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
