"""Idempotent broadcast: `Idempotency-Key` on POST /v1/broadcast, on one node and across
nodes through Redis (the contract's "Idempotent broadcast")."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest

from hub.broker.base import Accepted, Claim, IdempotencyConflict
from hub.broker.memory import _Claims
from tests.conftest import NodeFactory, Redis, Start
from tests.support import (
    Client,
    HubNode,
    RedisServer,
    eventually,
    history_ids,
    metric,
    raw_broadcast,
    token,
)

OPERATOR = token("operator", "o1")


def post(
    node: HubNode, body: bytes, key: str | bytes | None = None, bearer: str | None = OPERATOR
) -> httpx.Response:
    return raw_broadcast(node, body, key, bearer)


REPLAYED = "idempotent-replayed"
REBOOT = orjson.dumps({"room": "device:p1", "event": "command", "data": {"name": "reboot"}})


def _error(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code
    assert REPLAYED not in answer.headers


@pytest.fixture(scope="module")
def second_on_redis(module_redis: RedisServer, module_nodes: NodeFactory) -> HubNode:
    """A second node beside `started_on_redis`, with its settings."""
    return module_nodes("b", module_redis.url, broadcast_rate=0)


@pytest.fixture(params=["redis", "cluster"])
def two_nodes(request: pytest.FixtureRequest, hub_node: NodeFactory) -> tuple[HubNode, HubNode]:
    """Two nodes as `pair` has them, but with `start()`'s settings: shared by the module
    through one redis-server, the test's own on the cluster (see `node`)."""
    if request.param == "cluster":
        cluster: Redis = request.getfixturevalue("redis_cluster")
        a = hub_node("a", cluster.url, broadcast_rate=0, **cluster.settings)
        return a, hub_node("b", cluster.url, broadcast_rate=0, **cluster.settings)
    a, b = request.getfixturevalue("started_on_redis"), request.getfixturevalue("second_on_redis")
    return a, b


async def test_the_same_key_and_body_replay_the_first_answer_and_publish_once(
    tenant_node: HubNode, tenant: str
) -> None:
    operator = token("operator", "o1", tenant)
    device = await Client.connect(tenant_node, token("device", "p1", tenant))
    replays = metric(tenant_node, "hub_idempotent_replays_total")
    first = post(tenant_node, REBOOT, "retry-1", operator)
    assert first.status_code == 202, first.text
    assert REPLAYED not in first.headers
    event = await device.next_event()
    assert event["id"] == first.json()["ids"]["device:p1"]
    assert event["ts"] == first.json()["ts"]
    again = post(tenant_node, REBOOT, "retry-1", operator)
    assert again.status_code == 202
    assert again.content == first.content
    assert again.headers[REPLAYED] == "true"
    assert metric(tenant_node, "hub_idempotent_replays_total") == replays + 1
    await device.no_event()
    await device.close()


async def test_the_same_key_with_another_body_is_a_conflict_and_publishes_nothing(
    tenant_node: HubNode, tenant: str
) -> None:
    operator = token("operator", "o1", tenant)
    device = await Client.connect(tenant_node, token("device", "p1", tenant))
    assert post(tenant_node, REBOOT, "k", operator).status_code == 202
    await device.next_event()
    other = orjson.dumps({"room": "device:p1", "event": "command", "data": {"name": "wipe"}})
    _error(post(tenant_node, other, "k", operator), 409, "conflict")
    later = orjson.dumps({**orjson.loads(REBOOT), "ttl": 60})
    _error(post(tenant_node, later, "k", operator), 409, "conflict")
    await device.no_event()
    await device.close()


async def test_the_same_json_value_in_other_words_is_a_replay(
    tenant_node: HubNode, tenant: str
) -> None:
    """Key order and whitespace are not the body's value: a client that serialises again
    between attempts still gets its first answer."""
    operator = token("operator", "o1", tenant)
    device = await Client.connect(tenant_node, token("device", "p1", tenant))
    first = post(tenant_node, REBOOT, "k", operator)
    assert first.status_code == 202, first.text
    await device.next_event()
    fields = orjson.loads(REBOOT)
    reordered = orjson.dumps(dict(reversed(fields.items())), option=orjson.OPT_INDENT_2)
    for body in (REBOOT + b" \n", reordered):
        again = post(tenant_node, body, "k", operator)
        assert again.status_code == 202, again.text
        assert again.content == first.content
        assert again.headers[REPLAYED] == "true"
    await device.no_event()
    await device.close()


@pytest.mark.parametrize("key", ["k" * 129, "a b", "", "caf\u00e9".encode(), "a/b"])
def test_a_bad_key_is_refused_before_anything_else(
    shared_single: HubNode, key: str | bytes
) -> None:
    _error(post(shared_single, REBOOT, key), 400, "bad_request")
    _error(post(shared_single, REBOOT, key, bearer=None), 400, "bad_request")
    _error(post(shared_single, b"not json", key), 400, "bad_request")


def test_several_keys_are_refused(shared_single: HubNode) -> None:
    headers = [
        ("Authorization", f"Bearer {OPERATOR}"),
        ("Idempotency-Key", "a"),
        ("Idempotency-Key", "b"),
    ]
    answer = httpx.post(f"{shared_single.url}/v1/broadcast", content=REBOOT, headers=headers)
    _error(answer, 400, "bad_request")


def test_a_key_of_128_allowed_characters_is_taken(shared_single: HubNode, tenant: str) -> None:
    key = ("Az09_.:-" * 16)[:128]
    operator = token("operator", "o1", tenant)
    assert post(shared_single, REBOOT, key, operator).status_code == 202
    assert post(shared_single, REBOOT, key, operator).headers[REPLAYED] == "true"


async def test_a_refused_request_claims_no_key(tenant_node: HubNode, tenant: str) -> None:
    operator = token("operator", "o1", tenant)
    device = await Client.connect(tenant_node, token("device", "p1", tenant))
    _error(post(tenant_node, REBOOT, "once", token("device", "p2", tenant)), 403, "forbidden")
    _error(post(tenant_node, b'{"room": "device:p1"}', "once", operator), 400, "bad_request")
    _error(post(tenant_node, b"{", "once", operator), 400, "bad_request")
    answer = post(tenant_node, REBOOT, "once", operator)
    assert answer.status_code == 202, answer.text
    assert REPLAYED not in answer.headers
    assert (await device.next_event())["id"] == answer.json()["ids"]["device:p1"]
    await device.close()


def test_a_publish_a_tenant_bound_refuses_claims_no_key(start: Start) -> None:
    """The bound is checked where the key is (in the Redis script), and refuses first."""
    node = start(tenant_history_rooms=1)
    room = {"event": "x.n", "data": {}}
    assert post(node, orjson.dumps({"room": "r1", **room})).status_code == 202
    _error(post(node, orjson.dumps({"room": "r2", **room}), "bound"), 429, "rate_limited")
    answer = post(node, orjson.dumps({"room": "r1", **room}), "bound")
    assert answer.status_code == 202, answer.text
    assert REPLAYED not in answer.headers
    assert len(history_ids(node, "r1")) == 2


async def test_another_tenant_uses_the_same_key_independently(
    tenant_node: HubNode, tenant: str
) -> None:
    other_tenant = f"{tenant}.globex"
    acme = await Client.connect(tenant_node, token("device", "p1", tenant))
    globex = await Client.connect(tenant_node, token("device", "p1", other_tenant))
    assert post(tenant_node, REBOOT, "shared", token("operator", "o1", tenant)).status_code == 202
    other = post(tenant_node, REBOOT, "shared", token("operator", "o1", other_tenant))
    assert other.status_code == 202, other.text
    assert REPLAYED not in other.headers
    assert (await acme.next_event())["event"] == "command"
    assert (await globex.next_event())["event"] == "command"
    await acme.no_event()
    await globex.no_event()
    await acme.close()
    await globex.close()


async def test_a_key_is_free_again_after_the_ttl(start: Start) -> None:
    node = start(idempotency_ttl=1)
    assert post(node, REBOOT, "brief").status_code == 202

    def published_again() -> bool:
        answer = post(node, REBOOT, "brief")
        assert answer.status_code == 202, answer.text
        return REPLAYED not in answer.headers

    await eventually(published_again, 10, "the key to expire")


async def test_one_key_sent_to_two_nodes_at_once_publishes_once(
    two_nodes: tuple[HubNode, HubNode], tenant: str
) -> None:
    a, b = two_nodes
    watcher = await Client.connect(a, token("dashboard", "d1", tenant, rooms=["location:*"]))
    await watcher.subscribe("location:lobby")
    operator = token("operator", "o1", tenant)
    headers = {"Authorization": f"Bearer {operator}", "Content-Type": "application/json"}
    count = 100
    async with httpx.AsyncClient(headers=headers, timeout=10) as http:

        async def both(n: int) -> list[httpx.Response]:
            body = orjson.dumps({"room": "location:lobby", "event": "x.n", "data": {"n": n}})
            sent = [
                http.post(
                    f"{node.url}/v1/broadcast", content=body, headers={"Idempotency-Key": f"k{n}"}
                )
                for node in (a, b)
            ]
            return list(await asyncio.gather(*sent))

        answers = await asyncio.gather(*(both(n) for n in range(count)))
    ids = set()
    for pair in answers:
        assert [answer.status_code for answer in pair] == [202, 202], [a.text for a in pair]
        assert pair[0].content == pair[1].content
        assert sorted(REPLAYED in answer.headers for answer in pair) == [False, True]
        ids.add(pair[0].json()["ids"]["location:lobby"])
    assert len(ids) == count
    events = await watcher.events(lambda seen: len(seen) >= count, 30)
    assert sorted(event["data"]["n"] for event in events) == list(range(count))
    assert {event["id"] for event in events} == ids
    await watcher.no_event()
    reader = token("operator", "reader", tenant)  # history_ids, in this test's tenant
    history = b.get("/v1/rooms/location:lobby/history", reader, limit="1000")
    assert history.status_code == 200, history.text
    assert sorted(event["id"] for event in history.json()["events"]) == sorted(ids)
    await watcher.close()


def test_the_node_keeps_a_bounded_number_of_keys_oldest_dropped_first() -> None:
    claims = _Claims(keys=2, ids=3)

    def claim(key: str, digest: str = "d") -> Claim:
        return Claim(key, digest, ts=1, ttl_ms=60_000)

    claims.store("acme", claim("a"), Accepted(["1-0"], [0]))
    claims.store("acme", claim("b"), Accepted(["2-0"], [0]))
    assert claims.seen("acme", claim("a")) is not None
    assert claims.seen("globex", claim("a")) is None
    claims.store("acme", claim("c"), Accepted(["3-0"], [0]))
    assert claims.seen("acme", claim("a")) is None
    claims.store("acme", claim("d"), Accepted(["4-0", "4-1", None], [0] * 3))
    assert claims.seen("acme", claim("b")) is None
    assert claims.seen("acme", claim("c")) is None
    replay = claims.seen("acme", claim("d"))
    assert replay is not None
    assert (replay.ids, replay.ts) == (["4-0", "4-1", None], 1)
    with pytest.raises(IdempotencyConflict):
        claims.seen("acme", claim("d", digest="other"))


def test_the_node_forgets_expired_keys() -> None:
    claims = _Claims()
    claims.store("acme", Claim("a", "d", ts=1, ttl_ms=1), Accepted(["1-0"], [0]))
    time.sleep(0.05)
    assert claims.seen("acme", Claim("a", "d", ts=2, ttl_ms=1)) is None
