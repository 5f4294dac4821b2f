"""The Redis clients hub builds suit every redis-py release its dependency range allows.

redis-py 8.2 and later convert a synchronous `redis.retry.Retry` handed to an asyncio
client, with a `UserWarning` at every node's start; earlier releases took it silently. These
tests build and use the clients of each deployment with warnings turned into errors (a
deprecated argument fails them too), and check that what the clients retry with is the
asyncio `Retry`, whatever the installed release.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from typing import Any

import pytest
from redis.asyncio.retry import Retry

from hub.config import Settings
from hub.redis.clients import clients
from tests.support import SECRET, RedisCluster, RedisServer, SentinelSet

VERSION = importlib.metadata.version("redis")
READ_CONNECTIONS = 2


@pytest.fixture(params=["redis", "cluster", "sentinel"])
def deployment(request: pytest.FixtureRequest) -> Settings:
    """The settings of a node on one Redis, on a Redis Cluster, and under Sentinel."""
    values: dict[str, Any]
    if request.param == "sentinel":
        sentinels: SentinelSet = request.getfixturevalue("sentinel_set")
        values = dict(sentinels.settings)
    else:
        fixture = "redis_server" if request.param == "redis" else "redis_cluster"
        redis: RedisServer | RedisCluster = request.getfixturevalue(fixture)
        values = {"redis_url": redis.url, **redis.settings}
    return Settings(jwt_secret=SECRET, **values)


async def test_the_clients_start_and_answer_without_a_warning(deployment: Settings) -> None:
    assert deployment.redis is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        connections = clients(deployment.redis, READ_CONNECTIONS)
        await connections.start()
        try:
            assert await connections.writes.ping()
            assert await connections.reads.ping()
            subscriber = connections.connection(connections.shards()[0])
            await subscriber.connect()  # type: ignore[no-untyped-call]
            await subscriber.disconnect()
        finally:
            await connections.close()
    assert isinstance(subscriber.retry, Retry), (
        f"redis {VERSION}: hub's connections retry with a {type(subscriber.retry).__module__}"
        ".Retry, not the asyncio one (redis.asyncio.retry.Retry) their client awaits"
    )
