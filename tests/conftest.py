"""Fixtures that start real processes and always clean them up."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hub.protocol import is_tenant
from tests.support import HubNode, RedisCluster, RedisServer, SentinelSet, required
from tests.webhook_receiver import Receiver

pytest_plugins = ["tests.browser", "tests.collected", "pytester"]
"""The real browser's fixtures (`browser`, `browser_context`, `page`), the check that every
collected test ran, and `pytester`, which runs pytest on small suites (to test that check)."""


LONGEST_FIRST = (
    "test_history.py",
    "test_openapi.py",
    "test_client.py",
    "test_webhooks.py",
    "test_hostile.py",
    "test_closing.py",
    "test_idempotency.py",
    "test_packaging.py",
    "test_redis_ha.py",
    "test_node_death.py",
    "test_loadtest.py",
    "test_soak.py",
    "test_drain.py",
    "test_bench_scenarios.py",
    "test_lifecycle.py",
    "test_cluster.py",
    "test_state.py",
    "test_readme.py",
    "test_console_webhooks.py",
    "test_console.py",
    "test_fleet.py",
)
"""The files that take longest, longest first. Each file runs whole on one worker, in the
order collected: started last, one of these would leave the other workers idle at the end."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Hand the workers the longest files first; the others keep their order."""
    rank = {name: place for place, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture
def redis_server(hub_node: Nodes) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may stop and restart."""
    yield from _running(RedisServer, lambda server: hub_node.stop(server.url))


NodeFactory = Callable[..., HubNode]
Servers = TypeVar("Servers", RedisServer, RedisCluster, SentinelSet)


@pytest.fixture
def hub_node(tmp_path: Path) -> Iterator[Nodes]:
    """Start `hub serve` processes: `hub_node("a", redis_url=..., max_frame_bytes=2048)`.
    Their output is kept with the test's other files, which pytest keeps for a few runs."""
    nodes = Nodes(tmp_path)
    yield nodes
    nodes.stop()


@pytest.fixture(scope="module")
def module_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    """`hub_node` for nodes a module's tests share: a node's start is most of the time of
    a test that only talks to it. Tests on such a node keep to their own tenant, subjects
    and rooms, and read counters as differences, so that none depends on another's order."""
    nodes = Nodes(tmp_path_factory.mktemp("shared"))
    yield nodes
    nodes.stop()


class Nodes:
    """The `hub serve` processes a fixture started, stopped together at its end."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._nodes: list[HubNode] = []

    def __call__(
        self,
        name: str,
        redis_url: str | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        **settings: Any,
    ) -> HubNode:
        node = HubNode(name, redis_url, environ=environ, log_dir=self._log_dir, **settings)
        self._nodes.append(node)
        node.start()
        return node

    def stop(self, redis_url: str | None = None) -> None:
        """Stop them all (or those on the Redis at `redis_url`) at once: each takes a fifth
        of a second. A node alone is not waited for (`_STOPPING`)."""
        going = [n for n in self._nodes if redis_url in (None, n.env.get("HUB_REDIS_URL"))]
        self._nodes = [node for node in self._nodes if node not in going]
        for node in going:
            node.begin_stop()
        for node in going:
            if "HUB_REDIS_URL" in node.env:
                node.wait_stopped()  # it may still write to a Redis the next test uses
            else:
                _STOPPING.append(node)
        _STOPPING[:] = [node for node in _STOPPING if not node.stopped()]


_STOPPING: list[HubNode] = []
"""Nodes alone that were told to stop: the next test need not wait for them, since they
share nothing with it (a port it may be given is taken at start, `HubNode.start`)."""


@pytest.fixture(scope="session", autouse=True)
def _nodes_stopped_at_the_end() -> Iterator[None]:
    """Every node gone before the session ends, its coverage data written."""
    yield
    for node in _STOPPING:
        node.wait_stopped()


@pytest.fixture
def single(hub_node: NodeFactory) -> HubNode:
    """One node alone, no Redis: the default a newcomer gets."""
    return hub_node("solo")


@pytest.fixture
def tenant(request: pytest.FixtureRequest) -> str:
    """A tenant of this test's own (each parametrized run its own too): on the nodes a
    module's tests share, no other test's rooms, history, presence or limits are its."""
    readable = request.node.originalname.removeprefix("test_")[:40]
    name = f"{readable}-{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]}"
    assert is_tenant(name), name
    return name


@pytest.fixture(scope="module")
def shared_single(module_nodes: NodeFactory) -> HubNode:
    """One node alone that a module's tests share, each in its own `tenant`."""
    return module_nodes("solo")


@pytest.fixture(scope="module")
def refusing(shared_single: HubNode) -> HubNode:
    """The same node, for tests that leave nothing on it: they send it only what it
    refuses, or read what no request changes (files, health, headers)."""
    return shared_single


@pytest.fixture(scope="module")
def shared_pair(module_redis: RedisServer, module_nodes: NodeFactory) -> tuple[HubNode, HubNode]:
    """Two nodes on one redis-server that a module's tests share, each in its own `tenant`."""
    return pair_on(module_nodes, module_redis)


@pytest.fixture(params=["redis", "cluster"])
def tenant_pair(request: pytest.FixtureRequest, hub_node: NodeFactory) -> tuple[HubNode, HubNode]:
    """`pair` for tests that keep to their own `tenant`: through one redis-server, the
    module's `shared_pair`; through the cluster, the test's own (the session shares the
    cluster and empties it for every test)."""
    if request.param == "redis":
        shared: tuple[HubNode, HubNode] = request.getfixturevalue("shared_pair")
        return shared
    return pair_on(hub_node, request.getfixturevalue("redis_cluster"))


@pytest.fixture(scope="module")
def module_redis(module_nodes: Nodes) -> Iterator[RedisServer]:
    """A redis-server a module's tests share, with the nodes of `module_nodes`."""
    yield from _running(RedisServer, lambda server: module_nodes.stop(server.url))


def _running(
    made: Callable[[], Servers], first: Callable[[Servers], None] | None = None
) -> Iterator[Servers]:
    """Start what `made` makes, hand it over, and always stop it; `first` stops the nodes
    on it before (a node whose Redis went first cannot hand its presence over)."""
    required("redis-server")
    servers = made()
    servers.start()
    try:
        yield servers
    finally:
        if first is not None:
            first(servers)
        servers.stop()


@pytest.fixture(scope="session")
def shared_cluster() -> Iterator[RedisCluster]:
    """One Redis Cluster for the tests that only use it (each starts it empty)."""
    yield from _running(RedisCluster)


@pytest.fixture
def redis_cluster(shared_cluster: RedisCluster) -> RedisCluster:
    """The shared Redis Cluster, emptied for this test."""
    shared_cluster.flush()
    return shared_cluster


@pytest.fixture
def own_cluster() -> Iterator[RedisCluster]:
    """A Redis Cluster of this test's own, which it may fail over or reshard."""
    yield from _running(RedisCluster)


@pytest.fixture
def sentinel_set() -> Iterator[SentinelSet]:
    """A master, a replica and three Sentinels of this test's own."""
    yield from _running(SentinelSet)


Redis = RedisServer | RedisCluster
"""Where nodes meet: `hub_node("a", redis.url, **redis.settings)`."""


@pytest.fixture(params=["redis", "cluster"])
def redis(request: pytest.FixtureRequest) -> Redis:
    """Run the test twice: through one redis-server, and through a Redis Cluster."""
    fixture = "redis_server" if request.param == "redis" else "redis_cluster"
    backend: Redis = request.getfixturevalue(fixture)
    return backend


@pytest.fixture
def pair(hub_node: NodeFactory, redis: Redis) -> tuple[HubNode, HubNode]:
    """Two nodes meeting through Redis: one server, or a cluster."""
    return pair_on(hub_node, redis)


def pair_on(nodes: NodeFactory, redis: Redis) -> tuple[HubNode, HubNode]:
    """Nodes `a` and `b` on `redis`."""
    return nodes("a", redis.url, **redis.settings), nodes("b", redis.url, **redis.settings)


@pytest.fixture(scope="module")
def started_alone(module_nodes: NodeFactory) -> HubNode:
    """What `start()` starts alone, once for a module's tests that keep to their `tenant`."""
    return module_nodes("solo", broadcast_rate=0)


@pytest.fixture(scope="module")
def started_on_redis(module_redis: RedisServer, module_nodes: NodeFactory) -> HubNode:
    """What `start()` starts with a Redis, once for a module's tests that keep to their
    `tenant`."""
    return module_nodes("a", module_redis.url, broadcast_rate=0)


@pytest.fixture(params=["memory", "redis", "cluster"])
def tenant_node(request: pytest.FixtureRequest, hub_node: NodeFactory) -> HubNode:
    """`start()` with no settings, for tests that keep to their own `tenant`: the module's
    shared node alone and on one redis-server; on the cluster the test's own (the session
    shares the cluster and empties it for every test)."""
    return by_backend(request, hub_node, ("started_alone", "started_on_redis"), broadcast_rate=0)


def by_backend(
    request: pytest.FixtureRequest,
    hub_node: NodeFactory,
    shared: tuple[str, str],
    **settings: object,
) -> HubNode:
    """The node for `request.param` of a test that keeps to its own `tenant`: the module's
    fixtures named in `shared` for "memory" and "redis"; for "cluster", a node of the
    test's own with `settings`, as the session shares the cluster and empties it for every
    test."""
    if request.param == "cluster":
        cluster: Redis = request.getfixturevalue("redis_cluster")
        return hub_node("a", cluster.url, **settings, **cluster.settings)
    node: HubNode = request.getfixturevalue(shared[0] if request.param == "memory" else shared[1])
    return node


Start = Callable[..., HubNode]
"""Starts one node with settings: `start(history_size=1)`."""


@pytest.fixture(params=["memory", "redis", "cluster"])
def start(request: pytest.FixtureRequest, hub_node: NodeFactory) -> Start:
    """Run the test three times: on a node alone (in-process broker), on a node with a
    Redis of its own, and on one with a Redis Cluster. Broadcasts are not rate-limited."""

    def started(**settings: object) -> HubNode:
        if request.param == "memory":
            return hub_node("solo", broadcast_rate=0, **settings)
        fixture = "redis_server" if request.param == "redis" else "redis_cluster"
        redis: Redis = request.getfixturevalue(fixture)
        return hub_node("r", redis.url, broadcast_rate=0, **redis.settings, **settings)

    return started


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A back office's webhook endpoint on this machine (`tests.webhook_receiver`)."""
    endpoint = Receiver()
    yield endpoint
    endpoint.stop()
