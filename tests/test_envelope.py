"""The bytes of an event: cut, spliced and read back, in Python and in Redis' Lua alike."""

from __future__ import annotations

import orjson
import pytest
import redis

from hub import envelope
from tests.support import RedisServer

DATA = {"text": 'quotes " and ,"ts":1, and ,"id":"9-9"}', "n": [1, {"a": None}]}


@pytest.mark.parametrize("keeps_history", [True, False])
def test_an_event_cut_for_its_id_reads_back_whole(keeps_history: bool) -> None:
    encoded = envelope.encode("location:hall", "x.said", DATA, 1700000000123)
    prefix, suffix = envelope.parts(encoded, keeps_history=keeps_history)
    whole = prefix + (b"1700000000123-7" if keeps_history else b"") + suffix
    event = orjson.loads(whole)
    assert event["data"] == DATA
    assert envelope.ts_of(whole) == 1700000000123
    if keeps_history:
        assert event["id"] == "1700000000123-7"
        assert envelope.id_of(whole) == (1700000000123, 7)
        assert envelope.id_of(b"\x81\x7e\x00\x10" + whole) == (1700000000123, 7)
    else:
        assert "id" not in event


def test_a_head_finished_is_the_event_encoded_whole() -> None:
    data = {"device": 'p"1', "node": "a", "reason": ""}
    head = envelope.head("status", "device.offline", data)
    finished = envelope.finish(head, "node_lost", 42)
    assert finished == envelope.encode(
        "status", "device.offline", {**data, "reason": "node_lost"}, 42
    )


def test_a_head_is_cut_before_the_last_field_whatever_its_value() -> None:
    head = envelope.head("status", "e", {"a": 1, "reason": "ignored"})
    assert envelope.finish(head, "kept", 1) == envelope.encode(
        "status", "e", {"a": 1, "reason": "kept"}, 1
    )


@pytest.mark.parametrize("keeps_history", [True, False])
def test_the_lua_finish_makes_the_same_bytes(
    redis_server: RedisServer, keeps_history: bool
) -> None:
    head = envelope.head("status", "device.offline", {"device": "p1", "node": "a", "reason": ""})
    script = envelope.LUA + "return {finish(ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1')}"
    with redis.Redis.from_url(redis_server.url) as client:
        prefix, suffix = client.eval(script, 0, head, "closed", 1700000000999, int(keeps_history))
    expected = envelope.encode(
        "status", "device.offline", {"device": "p1", "node": "a", "reason": "closed"}, 1700000000999
    )
    assert (prefix, suffix) == envelope.parts(expected, keeps_history=keeps_history)
