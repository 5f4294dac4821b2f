"""The connections to Redis, by deployment: one Redis, a Redis under Sentinel, or a Redis
Cluster. Everything above asks here for its clients and for where a channel lives, so the
three differ in this module only.

Every client gives up at once on a failed command (no retries of its own): the hub's
callers decide what a failure means, and one writer stuck in retries would hold up the
whole node.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.crc import key_slot

from hub.config import Deployment

CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 5.0
WRITE_CONNECTIONS = 8
"""The node's own writers: the publish pipeline, presence, the registry, the figures."""

RedisClient = Redis | RedisCluster
"""What the hub's parts write and read with, whichever the deployment."""


def _options() -> dict[str, Any]:
    return {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": COMMAND_TIMEOUT,
        "socket_keepalive": True,
        # The asyncio Retry, which these clients await: redis-py 8.2 on takes a synchronous
        # one only with a warning at every start.
        "retry": Retry(NoBackoff(), 0),
        # RESP2: pub/sub replies come back from read_response, not through push handlers.
        "protocol": 2,
    }


class Clients:
    """A node's connections to one Redis, or to the master a Sentinel set names."""

    sharded = False
    """Whether room events go over sharded pub/sub (`SPUBLISH`, `SSUBSCRIBE`)."""

    def __init__(self, deployment: Deployment, read_connections: int) -> None:
        options = _options()
        self._pool: ConnectionPool
        self._read_pool: ConnectionPool
        if deployment.sentinels:
            url = urlsplit(deployment.url)
            sentinel = Sentinel(  # type: ignore[no-untyped-call]
                list(deployment.sentinels),
                sentinel_kwargs={
                    "socket_connect_timeout": CONNECT_TIMEOUT,
                    "socket_timeout": COMMAND_TIMEOUT,
                },
                db=int(url.path.strip("/") or 0),
                username=url.username,
                password=url.password,
                **options,
            )
            self._pool = _SentinelPool(  # type: ignore[no-untyped-call]
                deployment.master,
                sentinel,
                max_connections=WRITE_CONNECTIONS,
                timeout=COMMAND_TIMEOUT,
                **sentinel.connection_kwargs,
            )
            self._read_pool = _SentinelPool(  # type: ignore[no-untyped-call]
                deployment.master,
                sentinel,
                max_connections=read_connections,
                timeout=COMMAND_TIMEOUT,
                **sentinel.connection_kwargs,
            )
        else:
            self._pool = BlockingConnectionPool.from_url(
                deployment.url,
                max_connections=WRITE_CONNECTIONS,
                timeout=COMMAND_TIMEOUT,
                **options,
            )
            self._read_pool = BlockingConnectionPool.from_url(
                deployment.url, max_connections=read_connections, timeout=COMMAND_TIMEOUT, **options
            )
        self.writes: RedisClient = Redis(connection_pool=self._pool)
        """Publishes and presence, never queued behind readers."""
        self.reads: RedisClient = Redis(connection_pool=self._read_pool)
        """Reads for clients (history, presence, figures): at most `read_connections` at
        once; more wait for a connection, up to the command timeout, then are refused."""

    async def start(self) -> None:
        """Nothing to learn before the first command."""

    async def close(self) -> None:
        for client in (self.writes, self.reads):
            await client.aclose()
        await self._pool.disconnect()
        await self._read_pool.disconnect()

    async def refresh(self) -> None:
        """Learn again where the shards are; one Redis has one."""

    def shards(self) -> list[str]:
        """The shards room channels live on, by name."""
        return [""]

    def shard_of(self, channel: bytes) -> str:  # noqa: ARG002
        return ""

    def channel_on(self, shard: str, name: str) -> bytes:  # noqa: ARG002
        """A channel of `name`'s own on `shard`."""
        return f"hub:canary:{{{name}}}".encode()

    def connection(self, shard: str) -> AbstractConnection:  # noqa: ARG002
        """A new, unconnected connection to `shard`, for a subscriber of its own."""
        made: AbstractConnection = self._pool.make_connection()  # type: ignore[no-untyped-call]
        return made


class _SentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """A pool whose connections go to the master a Sentinel set names now, and which waits
    for a free connection past its size instead of failing, as `BlockingConnectionPool`."""


class ClusterClients(Clients):
    """A node's connections to a Redis Cluster: commands follow the slots (and their
    moves); each master gets a subscriber connection of its own."""

    sharded = True
    writes: RedisCluster
    reads: RedisCluster

    def __init__(self, deployment: Deployment, read_connections: int) -> None:
        options = _options()
        seeds = [_node(seed) for seed in deployment.url.split(",")]
        first = urlsplit(deployment.url.split(",")[0])
        self._options = {**options, "username": first.username, "password": first.password}
        common = {
            "startup_nodes": seeds,
            "require_full_coverage": False,
            **self._options,
        }
        self.writes = _WaitingCluster(WRITE_CONNECTIONS, **common)
        self.reads = _WaitingCluster(read_connections, **common)

    async def start(self) -> None:
        await self.writes.initialize()
        await self.reads.initialize()

    async def close(self) -> None:
        for client in (self.writes, self.reads):
            await client.aclose()

    async def refresh(self) -> None:
        for client in (self.writes, self.reads):
            await client.nodes_manager.initialize()

    def shards(self) -> list[str]:
        return [node.name for node in self.writes.get_primaries()]

    def shard_of(self, channel: bytes) -> str:
        name: str = self.writes.nodes_manager.get_node_from_slot(key_slot(channel)).name
        return name

    def channel_on(self, shard: str, name: str) -> bytes:
        slots = self.writes.nodes_manager.slots_cache
        for n in itertools.count():
            channel = f"hub:canary:{{{name}.{n}}}".encode()
            if slots[key_slot(channel)][0].name == shard:
                return channel
        raise AssertionError("unreachable")

    def connection(self, shard: str) -> AbstractConnection:
        host, _, port = shard.rpartition(":")
        return Connection(host=host, port=int(port), **self._options)


class _WaitingCluster(RedisCluster):
    """A cluster client whose commands and pipelines wait for one of `size` in flight to
    end, as a `BlockingConnectionPool` does, instead of failing once a node's connections
    are all busy (a handshake storm would otherwise turn into refusals). Each holds at
    most one connection per node."""

    def __init__(self, size: int, **options: Any) -> None:
        super().__init__(max_connections=size, **options)
        self._in_flight = asyncio.Semaphore(size)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self._in_flight:
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        async def waiting(*args: Any, **kwargs: Any) -> list[Any]:
            async with self._in_flight:
                return await execute(*args, **kwargs)

        pipe.execute = waiting  # type: ignore[method-assign]
        return pipe


def _node(seed: str) -> ClusterNode:
    """A cluster seed from `redis://host:port/0` (or just `host:port`)."""
    text = seed.strip()
    parts = urlsplit(text if "//" in text else f"redis://{text}")
    return ClusterNode(parts.hostname or "127.0.0.1", parts.port or 6379)


def clients(deployment: Deployment, read_connections: int) -> Clients:
    if deployment.cluster:
        return ClusterClients(deployment, read_connections)
    return Clients(deployment, read_connections)
