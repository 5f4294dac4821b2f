"""Redis outages are told once, then at growing intervals, with where Redis is and whether
it was ever reached; the node still answers its own figures meanwhile."""

from __future__ import annotations

import logging

import pytest

from hub.outage import FIRST_REMINDER, Outage
from hub.redact import safe_url
from tests.support import HubNode, RedisServer, eventually, free_port, token


def test_a_password_never_shows_in_a_url() -> None:
    assert safe_url("redis://:s3cret@db:6380/0") == "redis://:***@db:6380/0"
    assert safe_url("rediss://app:s3cret@db/1") == "rediss://app:***@db/1"
    assert safe_url("redis://db:6379/0") == "redis://db:6379/0"
    assert safe_url("redis://db:6379/0?password=s3cret") == "redis://db:6379/0?password=[redacted]"


def test_an_outage_is_told_once_then_at_doubling_intervals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    outage = Outage("redis://:pw@db:6379/0", now=lambda: now[0])
    error = ConnectionError("refused")
    with caplog.at_level(logging.INFO, logger="hub.redis"):
        outage.answered()
        for second in range(0, 200):
            now[0] = float(second)
            outage.failed("subscriber", error)
            outage.failed("presence", error)
        now[0] = 200.0
        outage.answered()
        outage.failed("presence", error)
    lines = [record.getMessage() for record in caplog.records]
    assert lines.pop(0) == "redis at redis://:***@db:6379/0 reached"
    lost = "redis at redis://:***@db:6379/0 lost ({0}): refused [event=redis_lost part={0}]"
    assert lines[0] == lost.format("subscriber")
    reminders = [line for line in lines if "still unreachable" in line]
    assert [line.split(" after ")[1].split(" s")[0] for line in reminders] == [
        str(int(FIRST_REMINDER * n)) for n in (1, 3, 7, 15)
    ]
    assert lines[-2] == (
        "redis at redis://:***@db:6379/0 reachable again after 200 s"
        " [event=redis_back outage_seconds=200]"
    )
    assert lines[-1] == lost.format("presence")
    events = [getattr(record, "event", None) for record in caplog.records]
    assert events.count("redis_lost") == 2
    assert events.count("redis_back") == 1
    assert "pw" not in "".join(lines)


async def test_a_redis_never_reached_is_said_once_with_its_url(
    request: pytest.FixtureRequest,
) -> None:
    port = free_port()
    node = HubNode("a", f"redis://127.0.0.1:{port}/0")
    node.start(ready=False)
    request.addfinalizer(node.stop)

    def told() -> bool:
        return "has not been reached" in node.output()

    await eventually(told, 10, "the node to say Redis was not reached")
    stats = node.get("/v1/stats", token("admin", "root", tenant=None))
    assert stats.status_code == 200
    body = stats.json()
    assert (body["node"]["node"], body["cluster"]) == ("a", None)
    assert body["cluster_error"] == "broker unavailable, retry"
    redis = RedisServer()
    redis.port = port
    redis.url = f"redis://127.0.0.1:{port}/0"
    redis.start()
    try:
        reached = f"redis at redis://127.0.0.1:{port}/0 reached after"
        await eventually(lambda: reached in node.output(), 20, "the node to reach Redis")
    finally:
        redis.stop()
    output = node.output()
    assert output.count(f"redis at redis://127.0.0.1:{port}/0 has not been reached") == 1
    assert "Traceback" not in output
