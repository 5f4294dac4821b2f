"""Webhooks across a cluster of real nodes: one delivery per message whichever node holds
it, the same webhook-id on every retry and after a node dies, offline only past its grace
(kept across nodes), order per device, and an endpoint's slowness its own."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from typing import Any

import httpx
import pytest
import redis as redis_client

from tests.conftest import NodeFactory, Redis
from tests.support import Client, HubNode, RedisServer, eventually, token
from tests.webhook_receiver import Receiver

GRACE = 1.5
HOOKS = {
    "webhook_allow_private": "true",
    "webhook_offline_grace": GRACE,
    "webhook_retry_base": 0.3,
}
"""Webhooks may reach this machine, a device is offline 1.5 s after it went, and retries
come quickly."""
ALL = ["device.online", "device.offline", "delivery.receipt"]


@pytest.fixture(scope="module")
def trio(module_redis: RedisServer, module_nodes: NodeFactory) -> tuple[HubNode, ...]:
    """Three nodes on one Redis, shared by the module's tests, each in its own tenant."""
    return tuple(module_nodes(name, module_redis.url, **HOOKS) for name in ("a", "b", "c"))


def register(node: HubNode, tenant: str, url: str, events: list[str] = ALL) -> dict[str, Any]:
    answer = node.post(
        "/v1/webhooks", {"url": url, "events": events}, token("operator", "o", tenant)
    )
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def deliveries(node: HubNode, tenant: str, endpoint: str) -> list[dict[str, Any]]:
    answer = node.get(f"/v1/webhooks/{endpoint}/deliveries", token("operator", "o", tenant))
    assert answer.status_code == 200, answer.text
    listed: list[dict[str, Any]] = answer.json()["deliveries"]
    return listed


def lease_holder(redis_url: str, tenant: str) -> str:
    """The node id of the node delivering the tenant's messages."""
    with redis_client.Redis.from_url(redis_url) as redis:
        run = redis.get(f"hub:wh:{{{tenant}}}:lease")
    assert run is not None
    node_id: str = run.decode().rsplit(".", 1)[0]
    return node_id


async def _cycle(node: HubNode, tenant: str, sub: str) -> Client:
    """A device that connects to `node`; the caller closes it."""
    return await Client.connect(node, token("device", sub, tenant, loc="lobby"))


async def test_each_message_reaches_its_endpoint_once_across_three_nodes(
    trio: tuple[HubNode, ...], tenant: str, receiver: Receiver
) -> None:
    """Six devices spread over three nodes come and go, and one sends a receipt: each of
    those thirteen messages is posted once, whichever node holds it, signed so that the
    Standard Webhooks reference verifier accepts it, shaped as the contract says."""
    a, b, c = trio
    created = register(b, tenant, receiver.url)
    assert created["secret"].startswith("whsec_")
    devices = [await _cycle(trio[n % 3], tenant, f"p{n}") for n in range(6)]
    sent = a.broadcast(
        token("operator", "o", tenant), room="device:p0", event="command", data={"name": "x"}
    )
    event = await devices[0].next_event()
    await devices[0].send(
        {"op": "receipt", "room": "device:p0", "id": event["id"], "status": "done"}
    )
    assert sent.status_code == 202
    for device in devices:
        await device.close()
    await eventually(lambda: len(receiver.delivered()) >= 13, 20, "13 webhooks")
    await asyncio.sleep(1.0)  # a second copy would have come by now
    messages = receiver.verified(created["secret"])
    kinds = Counter(message["type"] for message in messages)
    assert kinds == {"device.online": 6, "device.offline": 6, "delivery.receipt": 1}
    assert len({r.id for r in receiver.delivered()}) == 13
    offline = next(m for m in messages if m["type"] == "device.offline")
    assert offline["tenant"] == tenant
    assert set(offline["data"]) >= {"device", "node", "reason"}
    receipt = next(m for m in messages if m["type"] == "delivery.receipt")
    assert (receipt["data"]["sub"], receipt["data"]["status"]) == ("p0", "done")
    listed = deliveries(c, tenant, created["id"])
    assert {d["state"] for d in listed} == {"delivered"}
    assert all(d["attempts"] == 1 and d["status"] == 200 for d in listed)


async def test_a_device_that_flaps_between_nodes_within_the_grace_sends_nothing(
    trio: tuple[HubNode, ...], tenant: str, receiver: Receiver
) -> None:
    """It drops on one node and is back on another within the grace: one device, neither
    an offline nor a second online; the `status` room still shows both. Gone for longer
    than the grace, it is offline."""
    a, b, _ = trio
    register(a, tenant, receiver.url, ["device.online", "device.offline"])
    watcher = await Client.watching_status(a, tenant)
    device = await _cycle(a, tenant, "flappy")
    await eventually(lambda: len(receiver.delivered()) == 1, 10, "the first online")
    await device.close()
    went = await watcher.events(lambda events: len(events) >= 2, 10)
    assert [e["event"] for e in went] == ["device.online", "device.offline"]
    device = await _cycle(b, tenant, "flappy")
    assert (await watcher.next_event())["event"] == "device.online"
    await asyncio.sleep(GRACE)  # the grace passes with the device back...
    marker = await _cycle(a, tenant, "marker")  # ...and a later message shows the queue moved
    await eventually(lambda: len(receiver.delivered()) == 2, 10, "the marker's online")
    seen = [(r.message["type"], r.message["data"]["device"]) for r in receiver.delivered()]
    assert seen == [("device.online", "flappy"), ("device.online", "marker")]
    await device.close()
    await eventually(lambda: len(receiver.delivered()) == 3, GRACE + 10, "the offline")
    last = receiver.delivered()[-1].message
    assert (last["type"], last["data"]["device"]) == ("device.offline", "flappy")
    await marker.close()
    await watcher.close()


async def test_a_receiver_away_for_a_while_gets_everything_in_order_per_device(
    trio: tuple[HubNode, ...], tenant: str, receiver: Receiver
) -> None:
    """The back office goes away (connections refused) while devices come and go, and
    comes back on the same port: every message arrives, each device's in the order they
    happened, under the webhook-id the failed attempts used."""
    a, b, c = trio
    register(c, tenant, receiver.url, ["device.online", "device.offline"])
    receiver.stop()
    for round_ in range(2):
        devices = [await _cycle(trio[(n + round_) % 3], tenant, f"d{n}") for n in range(3)]
        await asyncio.sleep(0.2)
        for device in devices:
            await device.close()
        await asyncio.sleep(GRACE + 0.5)
    register_id = _only_endpoint(a, tenant)

    def retried() -> bool:
        """Each device's first message failed three times at least: the rest wait on it."""
        listed = deliveries(a, tenant, register_id)
        tried = {d["device"] for d in listed if d["attempts"] >= 3 and d["error"]}
        return len(listed) == 12 and tried == {"d0", "d1", "d2"}

    await eventually(retried, 30, "three failed attempts at each device's first message")
    pending = deliveries(a, tenant, register_id)
    assert {d["state"] for d in pending} == {"pending"}
    receiver.start_again()
    await eventually(lambda: len(receiver.delivered()) >= 12, 90, "the backlog")
    by_device: dict[str, list[str]] = {}
    for received in receiver.delivered():
        message = received.message
        by_device.setdefault(message["data"]["device"], []).append(message["type"])
        times = [
            r.message["time"]
            for r in receiver.delivered()
            if r.message["data"]["device"] == message["data"]["device"]
        ]
        assert times == sorted(times)
    assert by_device == {f"d{n}": ["device.online", "device.offline"] * 2 for n in range(3)}
    assert {r.id for r in receiver.delivered()} == {d["id"] for d in pending}
    assert {d["state"] for d in deliveries(b, tenant, register_id)} == {"delivered"}


def _only_endpoint(node: HubNode, tenant: str) -> str:
    listed = node.get("/v1/webhooks", token("operator", "o", tenant)).json()["webhooks"]
    assert len(listed) == 1
    endpoint: str = listed[0]["id"]
    return endpoint


async def test_a_slow_endpoint_holds_back_only_its_own_messages(
    trio: tuple[HubNode, ...], tenant: str, receiver: Receiver
) -> None:
    """Tenant one's back office takes 6 s to answer each message; tenant two's messages,
    and every socket, go on meanwhile."""
    a = trio[0]
    slow = Receiver()
    slow.delay = 6.0
    try:
        register(a, f"{tenant}-1", slow.url, ["device.online"])
        register(a, tenant, receiver.url, ["device.online"])
        first = [await _cycle(trio[n % 2], f"{tenant}-1", f"s{n}") for n in range(4)]
        await eventually(lambda: len(slow.received) >= 1, 10, "the slow endpoint's first post")
        second = [await _cycle(trio[n % 2], tenant, f"f{n}") for n in range(4)]
        await eventually(lambda: len(receiver.delivered()) == 4, 10, "the other tenant's")
        pong = await first[0].request("ping")
        assert pong["type"] == "pong"
        assert len(slow.answered) == 0, "the slow endpoint answered first: nothing was shown"
        for device in first + second:
            await device.close()
    finally:
        slow.stop()


async def test_the_node_holding_undelivered_messages_dies_and_another_delivers_them(
    hub_node: NodeFactory, redis_server: RedisServer, tenant: str, receiver: Receiver
) -> None:
    """SIGKILL of the node that holds the tenant's messages while its endpoint fails them:
    another node takes the tenant over once its lease ran out (two thirds of the node TTL)
    and delivers each, under the same webhook-id."""
    nodes = {name: hub_node(name, redis_server.url, **HOOKS, node_ttl=3) for name in "ab"}
    receiver.status = 503
    register(nodes["a"], tenant, receiver.url, ["device.online"])
    devices = [await _cycle(nodes["b"], tenant, f"k{n}") for n in range(5)]
    await eventually(lambda: len({r.id for r in receiver.received}) == 5, 15, "5 attempts")
    holder = lease_holder(redis_server.url, tenant)
    failed = {r.id for r in receiver.received}
    nodes[holder].stop(signal.SIGKILL)
    survivor = nodes["b" if holder == "a" else "a"]
    receiver.status = 200
    await eventually(lambda: {r.id for r in receiver.delivered()} == failed, 40, "a takeover")
    listed = deliveries(survivor, tenant, _only_endpoint(survivor, tenant))
    assert [(d["state"], d["status"]) for d in listed] == [("delivered", 200)] * 5
    assert lease_holder(redis_server.url, tenant) == survivor.name
    for device in devices:
        if holder == "b":
            continue
        await device.close()


async def test_on_the_redis_cluster_each_message_is_posted_once(
    hub_node: NodeFactory, redis_cluster: Redis, tenant: str, receiver: Receiver
) -> None:
    nodes = [hub_node(name, redis_cluster.url, **redis_cluster.settings, **HOOKS) for name in "ab"]
    register(nodes[0], tenant, receiver.url)
    devices = [await _cycle(nodes[n % 2], tenant, f"c{n}") for n in range(4)]
    for device in devices:
        await device.close()
    await eventually(lambda: len(receiver.delivered()) >= 8, 20, "8 webhooks")
    await asyncio.sleep(1.0)
    assert Counter(r.message["type"] for r in receiver.delivered()) == {
        "device.online": 4,
        "device.offline": 4,
    }
    assert len({r.id for r in receiver.delivered()}) == 8


def _refused(answer: httpx.Response, status: int, code: str, words: str = "") -> None:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code
    assert words in error["message"]


def test_registration_refuses_what_it_cannot_use(shared_single: HubNode, tenant: str) -> None:
    """Sent as an attacker would: URLs into the node's own network, bodies of the wrong
    shape and raw bytes no JSON library would write, other roles and tenants, no token. Each
    refusal is checked for its reason, and nothing is registered."""
    operator = token("operator", "o", tenant)

    bearing = {"Authorization": f"Bearer {operator}"}

    def post(body: Any, bearer: str = operator) -> httpx.Response:
        return shared_single.post("/v1/webhooks", body, bearer)

    for url in (
        "http://127.0.0.1:8000/",
        "http://localhost/",
        "http://[::1]/",
        "http://10.1.2.3/",
        "http://169.254.169.254/latest/meta-data",
        "http://0.0.0.0/",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",
    ):
        answer = post({"url": url, "events": ["device.offline"]})
        _refused(answer, 400, "bad_request", "HUB_WEBHOOK_ALLOW_PRIVATE")
    public = "http://1.1.1.1/hooks"
    """A public address literal: a body refused with it is refused for the body's sake."""
    for body, words in (
        ({"url": "ftp://example.com/", "events": ["device.offline"]}, "http"),
        ({"url": "http://user:pw@1.1.1.1/", "events": ["device.offline"]}, "user"),
        ({"url": public, "events": []}, "events"),
        ({"url": public, "events": ["device.heartbeat"]}, "unknown event 'device.heartbeat'"),
        ({"url": public, "events": ["device.online", "device.online"]}, "twice"),
        ({"url": public, "events": "device.online"}, "events"),
        ({"url": public + "a" * 3000, "events": ["device.online"]}, "longer than 2048"),
        ({"url": 5, "events": ["device.online"]}, "url"),
        ({"url": public, "events": ["device.online"], "description": "x" * 300}, "description"),
    ):
        _refused(post(body), 400, "bad_request", words)
    _refused(post([1, 2]), 400, "bad_request", "JSON object")
    for raw, words in (
        (
            b'{"url": "http://1.1.1.1/", "url": "http://10.0.0.1/", "events": ["device.online"]}',
            "10.0.0.1",
        ),
        (b'{"url": "http://1.1.1.1/\\r\\nX-Injected: 1", "events": ["device.online"]}', "control"),
        (b'{"url": "http://1.1.1.1:0/", "events": ["device.online"]}', "port"),
        (b'{"url": "http://1.1.1.1:99999/", "events": ["device.online"]}', "malformed"),
        (b'{"url": "http://[fe80::1%25eth0]/", "events": ["device.online"]}', "IPv6"),
        (b'{"url": "http://b\\u00fccher.example/", "events": ["device.online"]}', "xn--"),
        (b'{"url": "http://1.1.1.1/", "events": ["device.online"]', "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
    ):
        sent = httpx.post(f"{shared_single.url}/v1/webhooks", content=raw, headers=bearing)
        _refused(sent, 400, "bad_request", words)
    for raw in (b"not json", b"{" * 20000):
        anonymous = httpx.post(f"{shared_single.url}/v1/webhooks", content=raw)
        _refused(anonymous, 401, "unauthorized")  # the token first, the body never read
    _refused(
        post({"url": "http://10.0.0.1/", "events": ["device.online"], "tenant": "other"}),
        403,
        "forbidden",
    )
    _refused(post({"url": "x" * 20000, "events": []}), 413, "too_large")
    for role in ("device", "dashboard"):
        _refused(
            post(
                {"url": "http://10.0.0.1/", "events": ["device.online"]}, token(role, "r", tenant)
            ),
            403,
            "forbidden",
        )
    listed = shared_single.get("/v1/webhooks", operator)
    assert listed.json() == {"webhooks": []}
    for path in ("/v1/webhooks/wh_nope/deliveries", "/v1/webhooks/..%2F/deliveries"):
        _refused(shared_single.get(path, operator), 404, "not_found")
    gone = httpx.delete(
        f"{shared_single.url}/v1/webhooks/wh_nope", headers={"Authorization": f"Bearer {operator}"}
    )
    _refused(gone, 404, "not_found")
    retry = shared_single.post("/v1/webhooks/wh_nope/deliveries/msg_x/retry", None, operator)
    _refused(retry, 404, "not_found")


def test_an_endpoint_is_listed_without_its_secret_and_the_tenant_has_a_cap(
    hub_node: NodeFactory, tenant: str, receiver: Receiver
) -> None:
    node = hub_node("capped", webhook_allow_private="true", webhook_max_endpoints=2)
    operator = token("operator", "o", tenant)
    first = register(node, tenant, receiver.url)
    register(node, tenant, receiver.url, ["device.offline"])
    _refused(
        node.post("/v1/webhooks", {"url": receiver.url, "events": ALL}, operator), 409, "conflict"
    )
    listed = node.get("/v1/webhooks", operator).json()["webhooks"]
    assert [w["id"] for w in listed].count(first["id"]) == 1
    assert all("secret" not in w for w in listed)
    assert node.get("/v1/webhooks", token("operator", "o", "elsewhere")).json() == {"webhooks": []}
    answer = httpx.delete(
        f"{node.url}/v1/webhooks/{first['id']}", headers={"Authorization": f"Bearer {operator}"}
    )
    assert answer.status_code == 204
    assert len(node.get("/v1/webhooks", operator).json()["webhooks"]) == 1
    assert time.time() * 1000 - listed[0]["created"] < 60_000
