"""Idempotent broadcast: `Idempotency-Key` on POST /v1/broadcast, on one node and across
nodes through Redis (the contract's "Idempotent broadcast")."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest

from hub.broker.base import Claim, IdempotencyConflict
from hub.broker.memory import _Claims
from tests.conftest import NodeFactory, Redis, Start
from tests.support import Client, HubNode, eventually, history_ids, metric, token

OPERATOR = token("operator", "o1")
REPLAYED = "idempotent-replayed"
REBOOT = orjson.dumps({"room": "device:p1", "event": "command", "data": {"name": "reboot"}})


def post(
    node: HubNode, body: bytes, key: str | bytes | None = None, bearer: str | None = OPERATOR
) -> httpx.Response:
    headers = [(b"Content-Type", b"application/json")]
    if bearer is not None:
        headers.append((b"Authorization", f"Bearer {bearer}".encode()))
    if key is not None:
        headers.append((b"Idempotency-Key", key if isinstance(key, bytes) else key.encode()))
    return httpx.post(f"{node.url}/v1/broadcast", content=body, headers=headers, timeout=10)


def _error(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code
    assert REPLAYED not in answer.headers


async def test_the_same_key_and_body_replay_the_first_answer_and_publish_once(
    start: Start,
) -> None:
    node = start()
    device = await Client.connect(node, token("device", "p1"))
    first = post(node, REBOOT, "retry-1")
    assert first.status_code == 202, first.text
    assert REPLAYED not in first.headers
    event = await device.next_event()
    assert event["id"] == first.json()["ids"]["device:p1"]
    assert event["ts"] == first.json()["ts"]
    again = post(node, REBOOT, "retry-1")
    assert again.status_code == 202
    assert again.content == first.content
    assert again.headers[REPLAYED] == "true"
    assert metric(node, "hub_idempotent_replays_total") == 1
    await device.no_event()
    await device.close()


async def test_the_same_key_with_another_body_is_a_conflict_and_publishes_nothing(
    start: Start,
) -> None:
    node = start()
    device = await Client.connect(node, token("device", "p1"))
    assert post(node, REBOOT, "k").status_code == 202
    await device.next_event()
    other = orjson.dumps({"room": "device:p1", "event": "command", "data": {"name": "wipe"}})
    _error(post(node, other, "k"), 409, "conflict")
    _error(post(node, REBOOT + b" ", "k"), 409, "conflict")
    await device.no_event()
    await device.close()


@pytest.mark.parametrize("key", ["k" * 129, "a b", "", "caf\u00e9".encode(), "a/b"])
def test_a_bad_key_is_refused_before_anything_else(refusing: HubNode, key: str | bytes) -> None:
    _error(post(refusing, REBOOT, key), 400, "bad_request")
    _error(post(refusing, REBOOT, key, bearer=None), 400, "bad_request")
    _error(post(refusing, b"not json", key), 400, "bad_request")


def test_several_keys_are_refused(refusing: HubNode) -> None:
    headers = [
        ("Authorization", f"Bearer {OPERATOR}"),
        ("Idempotency-Key", "a"),
        ("Idempotency-Key", "b"),
    ]
    answer = httpx.post(f"{refusing.url}/v1/broadcast", content=REBOOT, headers=headers)
    _error(answer, 400, "bad_request")


def test_a_key_of_128_allowed_characters_is_taken(single: HubNode) -> None:
    key = ("Az09_.:-" * 16)[:128]
    assert post(single, REBOOT, key).status_code == 202
    assert post(single, REBOOT, key).headers[REPLAYED] == "true"


async def test_a_refused_request_claims_no_key(start: Start) -> None:
    node = start()
    device = await Client.connect(node, token("device", "p1"))
    _error(post(node, REBOOT, "once", bearer=token("device", "p2")), 403, "forbidden")
    _error(post(node, b'{"room": "device:p1"}', "once"), 400, "bad_request")
    _error(post(node, b"{", "once"), 400, "bad_request")
    answer = post(node, REBOOT, "once")
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


async def test_another_tenant_uses_the_same_key_independently(start: Start) -> None:
    node = start()
    acme = await Client.connect(node, token("device", "p1", tenant="acme"))
    globex = await Client.connect(node, token("device", "p1", tenant="globex"))
    assert post(node, REBOOT, "shared").status_code == 202
    other = post(node, REBOOT, "shared", bearer=token("operator", "o1", tenant="globex"))
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
    hub_node: NodeFactory, redis: Redis
) -> None:
    a = hub_node("a", redis.url, broadcast_rate=0, **redis.settings)
    b = hub_node("b", redis.url, broadcast_rate=0, **redis.settings)
    watcher = await Client.connect(a, token("dashboard", "d1", rooms=["location:*"]))
    await watcher.subscribe("location:lobby")
    headers = {"Authorization": f"Bearer {OPERATOR}", "Content-Type": "application/json"}
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
    assert sorted(history_ids(b, "location:lobby")) == sorted(ids)
    await watcher.close()


def test_the_node_keeps_a_bounded_number_of_keys_oldest_dropped_first() -> None:
    claims = _Claims(keys=2, ids=3)

    def claim(key: str, digest: str = "d") -> Claim:
        return Claim(key, digest, ts=1, ttl_ms=60_000)

    claims.store("acme", claim("a"), ["1-0"])
    claims.store("acme", claim("b"), ["2-0"])
    assert claims.seen("acme", claim("a")) is not None
    assert claims.seen("globex", claim("a")) is None
    claims.store("acme", claim("c"), ["3-0"])
    assert claims.seen("acme", claim("a")) is None
    claims.store("acme", claim("d"), ["4-0", "4-1", None])
    assert claims.seen("acme", claim("b")) is None
    assert claims.seen("acme", claim("c")) is None
    replay = claims.seen("acme", claim("d"))
    assert replay is not None
    assert (replay.ids, replay.ts) == (["4-0", "4-1", None], 1)
    with pytest.raises(IdempotencyConflict):
        claims.seen("acme", claim("d", digest="other"))


def test_the_node_forgets_expired_keys() -> None:
    claims = _Claims()
    claims.store("acme", Claim("a", "d", ts=1, ttl_ms=1), ["1-0"])
    time.sleep(0.05)
    assert claims.seen("acme", Claim("a", "d", ts=2, ttl_ms=1)) is None
