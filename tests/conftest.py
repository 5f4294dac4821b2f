"""Fixtures that start real processes and always clean them up."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support import HubNode, RedisServer, required

pytest_plugins = ["tests.browser"]
"""The real browser's fixtures (`browser`, `browser_context`, `page`)."""


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may stop and restart."""
    required("redis-server")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


NodeFactory = Callable[..., HubNode]


@pytest.fixture
def hub_node() -> Iterator[NodeFactory]:
    """Start `hub serve` processes: `hub_node("a", redis_url=..., max_frame_bytes=2048)`."""
    nodes: list[HubNode] = []

    def start(name: str, redis_url: str | None = None, **settings: Any) -> HubNode:
        node = HubNode(name, redis_url, **settings)
        nodes.append(node)
        node.start()
        return node

    yield start
    for node in nodes:
        node.stop()


@pytest.fixture
def single(hub_node: NodeFactory) -> HubNode:
    """One node alone, no Redis: the default a newcomer gets."""
    return hub_node("solo")


@pytest.fixture
def pair(hub_node: NodeFactory, redis_server: RedisServer) -> tuple[HubNode, HubNode]:
    """Two nodes meeting through a redis-server of their own."""
    return hub_node("a", redis_server.url), hub_node("b", redis_server.url)


Start = Callable[..., HubNode]
"""Starts one node with settings: `start(history_size=1)`."""


@pytest.fixture(params=["memory", "redis"])
def start(request: pytest.FixtureRequest, hub_node: NodeFactory) -> Start:
    """Run the test twice: on a node alone (in-process broker), and on a node with a Redis
    of its own. Broadcasts are not rate-limited."""

    def started(**settings: object) -> HubNode:
        if request.param == "memory":
            return hub_node("solo", broadcast_rate=0, **settings)
        redis: RedisServer = request.getfixturevalue("redis_server")
        return hub_node("r", redis.url, broadcast_rate=0, **settings)

    return started
