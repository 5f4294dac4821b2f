"""POST /v1/broadcast and the small endpoints, with the errors of the contract."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import NodeFactory
from tests.support import Client, HubNode, token

OPERATOR = token("operator", "o1")
COMMAND = {"event": "command", "data": {"name": "reboot"}}


def _error(answer: httpx.Response, status: int, code: str) -> str:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code
    message: str = error["message"]
    return message


async def test_broadcast_is_accepted_with_ids_and_ts_and_delivered(single: HubNode) -> None:
    device = await Client.connect(single, token("device", "p1"))
    answer = single.broadcast(OPERATOR, room="device:p1", **COMMAND)
    assert answer.status_code == 202
    body = answer.json()
    assert set(body) == {"ids", "ts", "reach"}
    assert body["reach"] == {"device:p1": 1}
    assert list(body["ids"]) == ["device:p1"]
    event = await device.next_event()
    assert event["ts"] == body["ts"]
    await device.close()


async def test_admin_names_the_tenant_and_reaches_only_that_tenant(single: HubNode) -> None:
    acme = await Client.connect(single, token("device", "p1", tenant="acme"))
    globex = await Client.connect(single, token("device", "p1", tenant="globex"))
    admin = token("admin", "root", tenant=None)
    answer = single.broadcast(admin, room="device:p1", tenant="globex", **COMMAND)
    assert answer.status_code == 202
    assert (await globex.next_event())["event"] == "command"
    await acme.no_event()
    _error(single.broadcast(admin, room="device:p1", **COMMAND), 400, "bad_request")
    await acme.close()
    await globex.close()


async def test_a_refused_multi_room_broadcast_delivers_nothing(single: HubNode) -> None:
    device = await Client.connect(single, token("device", "p1"))
    answer = single.broadcast(OPERATOR, rooms=["device:p1", "bad room"], **COMMAND)
    _error(answer, 400, "bad_request")
    await device.no_event()
    await device.close()


@pytest.mark.parametrize(
    ("bearer", "status", "code"),
    [
        (None, 401, "unauthorized"),
        ("garbage", 401, "unauthorized"),
        (token("dashboard", "d1"), 403, "forbidden"),
        (token("device", "p1"), 403, "forbidden"),
    ],
)
def test_only_operators_and_admins_broadcast(
    refusing: HubNode, bearer: str | None, status: int, code: str
) -> None:
    _error(refusing.post("/v1/broadcast", {"room": "devices", **COMMAND}, bearer), status, code)


@pytest.mark.parametrize(
    ("body", "status", "code", "says"),
    [
        ({"room": "devices", "tenant": "globex", **COMMAND}, 403, "forbidden", "tenant"),
        ([1, 2], 400, "bad_request", "object"),
        ({"event": "command", "data": {"name": "x"}}, 400, "bad_request", "room"),
        ({"room": "a", "rooms": ["b"], **COMMAND}, 400, "bad_request", "room"),
        ({"rooms": [], **COMMAND}, 400, "bad_request", "rooms"),
        ({"rooms": [f"r{i}" for i in range(101)], **COMMAND}, 400, "bad_request", "100"),
        ({"room": "devices", "event": "Bad!", "data": {}}, 400, "bad_request", "event"),
        (
            {"room": "devices", "event": "content.update", "data": {}},
            400,
            "bad_request",
            "data.content_id",
        ),
        ({"room": "devices", "event": "what.ever", "data": {}}, 404, "not_found", "unknown event"),
        ({"room": "devices", "event": "device.online", "data": {}}, 403, "forbidden", "hub only"),
    ],
)
def test_broadcast_errors(refusing: HubNode, body: Any, status: int, code: str, says: str) -> None:
    assert says in _error(refusing.post("/v1/broadcast", body, OPERATOR), status, code)


def test_a_body_that_is_not_json_is_400(refusing: HubNode) -> None:
    answer = httpx.post(
        refusing.url + "/v1/broadcast",
        content=b"{nope",
        headers={"Authorization": f"Bearer {OPERATOR}"},
    )
    _error(answer, 400, "bad_request")


def test_a_body_over_one_mebibyte_is_413(refusing: HubNode) -> None:
    body = {"room": "devices", "event": "x.big", "data": {"pad": "x" * (1 << 20)}}
    _error(refusing.post("/v1/broadcast", body, OPERATOR), 413, "too_large")


def test_an_event_over_the_event_limit_is_413(hub_node: NodeFactory) -> None:
    node = hub_node("small", max_event_bytes=300)
    body = {"room": "devices", "event": "x.big", "data": {"pad": "x" * 400}}
    _error(node.post("/v1/broadcast", body, OPERATOR), 413, "too_large")


def test_broadcasts_over_the_rate_are_429_with_retry_after(hub_node: NodeFactory) -> None:
    node = hub_node("limited", broadcast_rate=2)
    answers = [node.broadcast(OPERATOR, room="devices", **COMMAND) for _ in range(10)]
    limited = [answer for answer in answers if answer.status_code == 429]
    assert limited
    assert all(int(answer.headers["Retry-After"]) >= 1 for answer in limited)
    _error(limited[0], 429, "rate_limited")


def test_a_rest_call_without_a_token_is_told_of_the_header_only(refusing: HubNode) -> None:
    answer = httpx.get(f"{refusing.url}/v1/stats")
    _error(answer, 401, "unauthorized")
    assert answer.json()["error"]["message"] == "a token is required: Authorization: Bearer <jwt>"


def test_unknown_paths_are_json_404(refusing: HubNode) -> None:
    _error(httpx.get(refusing.url + "/nope"), 404, "not_found")


def test_a_method_a_path_does_not_take_is_405_method_not_allowed(refusing: HubNode) -> None:
    answer = httpx.delete(f"{refusing.url}/v1/broadcast")
    assert answer.status_code == 405
    assert answer.json()["error"]["code"] == "method_not_allowed"
    assert answer.headers["allow"] == "POST"


def test_health_and_readiness_on_a_single_node(refusing: HubNode) -> None:
    assert httpx.get(refusing.url + "/healthz").status_code == 200
    ready = httpx.get(refusing.url + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True


def test_metrics_are_prometheus_text(refusing: HubNode) -> None:
    answer = httpx.get(refusing.url + "/metrics")
    assert answer.status_code == 200
    assert "hub_connections" in answer.text


def test_metrics_need_the_stats_key_when_one_is_set(hub_node: NodeFactory) -> None:
    node = hub_node("keyed", stats_key="k")
    _error(httpx.get(node.url + "/metrics"), 401, "unauthorized")
    keyed = httpx.get(node.url + "/metrics", headers={"Authorization": "Bearer k"})
    assert keyed.status_code == 200


@pytest.mark.parametrize("limit", ["²", "\u0661\u0660", "0", "1001", "-1", " 5"])
def test_history_limit_is_ascii_digits_in_range(refusing: HubNode, limit: str) -> None:
    answer = refusing.get("/v1/rooms/r/history", token("operator", "o"), limit=limit)
    _error(answer, 400, "bad_request")


def test_a_broadcast_nested_too_deep_is_a_400_in_json(refusing: HubNode) -> None:
    data: dict[str, Any] = {"a": 1}
    for _ in range(80):
        data = {"a": [data]}
    answer = refusing.broadcast(token("operator", "o"), room="r", event="x.a", data=data)
    assert "nested deeper" in _error(answer, 400, "bad_request")
