"""The stream sessions' mailbox: a POST that reached a node which does not hold its session
is forwarded to the node that does, and answered with that node's status.

One suite for every implementation: two in-process mailboxes sharing an exchange, and two
Redis mailboxes (built by the composition root, as a node builds them) on one redis-server
and on a Redis Cluster, each pair acting as two nodes of one cluster in the test's process.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from redis.asyncio import Redis
from redis.asyncio.connection import Connection

from hub.assembly import Parts, assemble
from hub.config import Settings
from hub.errors import BrokerUnavailable
from hub.mailbox import Exchange, Mailbox, MemoryMailbox
from hub.mailbox.base import ACCEPTED, FORBIDDEN, FORWARDS_IN_FLIGHT, NOT_FOUND, UNAVAILABLE
from hub.mailbox.redis import RedisMailbox, channel_of, session_key
from hub.metrics import Metrics
from tests.conftest import Redis as Where
from tests.support import SECRET, RedisCluster, RedisServer, eventually

SUB, TENANT = "screen-1", "acme"
BODY = bytes(range(256)) + b'\n{"type":"heartbeat"}\n'
"""Every byte value, newlines too: what the mailbox carries must come out the same."""
DEADLINE = 10.0
SHORT_TIMEOUT = 0.5
"""The reply timeout of the tests that wait for a holder that does not answer."""


def new_session() -> str:
    return secrets.token_urlsafe(16)


@dataclass
class Holder:
    """A node's stream code as the mailbox sees it: each request recorded; 202 for the
    session's own sub and tenant, 403 for any other; held at `gate` when one is set."""

    requests: list[tuple[str, str, str | None, bytes]] = field(default_factory=list)
    gate: asyncio.Event | None = None

    async def __call__(self, session: str, sub: str, tenant: str | None, body: bytes) -> int:
        self.requests.append((session, sub, tenant, body))
        if self.gate is not None:
            await self.gate.wait()
        return ACCEPTED if (sub, tenant) == (SUB, TENANT) else FORBIDDEN


@dataclass
class Node:
    mailbox: Mailbox
    holder: Holder = field(default_factory=Holder)
    parts: Parts | None = None

    async def start(self) -> None:
        await self.mailbox.start(self.holder)

    async def stop(self) -> None:
        await self.mailbox.stop()
        if self.parts is not None:
            await self.parts.node.broker.disconnect()  # closes the node's Redis clients


@dataclass
class Cluster:
    """Nodes `a` (where POSTs land) and `b` (which holds the streams)."""

    where: Where | None
    a: Node
    b: Node


def built(where: Where, name: str, **values: Any) -> Node:
    """Node `name`'s mailbox on `where`, as the composition root builds it."""
    values = {"redis_url": where.url, **where.settings, **values}
    settings = Settings(jwt_secret=SECRET, node_id=name, **values)
    parts = assemble(settings, Metrics())
    return Node(parts.mailbox, parts=parts)


def emptied(where: Where) -> Where:
    servers = where.masters() if isinstance(where, RedisCluster) else [where]
    for server in servers:
        with redis.Redis(host="127.0.0.1", port=server.port) as client:
            client.flushall()
    return where


@pytest.fixture(params=["memory", "redis", "cluster"])
def where(request: pytest.FixtureRequest) -> Where | None:
    """In the process, or through a redis-server or a Redis Cluster (the session's one,
    emptied for each test)."""
    if request.param == "memory":
        return None
    shared = "shared_cluster" if request.param == "cluster" else "module_redis"
    return emptied(request.getfixturevalue(shared))


@contextlib.asynccontextmanager
async def started(where: Where | None, **values: Any) -> AsyncIterator[Cluster]:
    """Nodes `a` and `b` started, and stopped when the caller is done."""
    if where is None:
        exchange = Exchange()
        a, b = Node(MemoryMailbox(exchange)), Node(MemoryMailbox(exchange))
    else:
        a, b = built(where, "a", **values), built(where, "b", **values)
    nodes = Cluster(where, a, b)
    try:
        for node in (a, b):
            await node.start()
        await until(lambda: a.mailbox.available and b.mailbox.available, "the mailboxes")
        yield nodes
    finally:
        for node in (a, b):
            await node.stop()


@pytest.fixture
async def nodes(where: Where | None) -> AsyncIterator[Cluster]:
    async with started(where) as started_nodes:
        yield started_nodes


async def until(condition: Callable[[], bool], what: str) -> None:
    async def holds() -> bool:
        return condition()

    await eventually(holds, DEADLINE, what, interval=0.01)


@contextlib.asynccontextmanager
async def monitored(where: Where | None) -> AsyncIterator[list[str]]:
    """Every command Redis carried out meanwhile (MONITOR on every master), in order."""
    seen: list[str] = []
    if where is None:
        yield seen
        return
    servers = where.masters() if isinstance(where, RedisCluster) else [where]
    conns = [Connection(host="127.0.0.1", port=server.port, protocol=2) for server in servers]
    for conn in conns:
        await conn.connect()  # type: ignore[no-untyped-call]
        await conn.send_command("MONITOR")
        await conn.read_response()

    async def read(conn: Connection) -> None:
        while True:
            line = await conn.read_response(timeout=math.inf)
            seen.append(line.decode() if isinstance(line, bytes) else str(line))

    readers = [asyncio.create_task(read(conn)) for conn in conns]
    try:
        yield seen
        marker = new_session()
        for server in servers:  # Redis carries one client's commands in order
            async with Redis(host="127.0.0.1", port=server.port, protocol=2) as client:
                await client.echo(marker)
        await until(lambda: sum(marker in line for line in seen) == len(servers), "the marker")
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for conn in conns:
            await conn.disconnect()


def mailbox_commands(seen: list[str]) -> list[str]:
    """The commands among `seen` on the mailbox's keys and channels, but canaries."""
    return [
        line.split('"')[1]
        for line in seen
        if ('"hub:ss:' in line or '"hub:mb:' in line) and not line.endswith('" "c"')
    ]


def requests_published(seen: list[str]) -> list[str]:
    """The mailbox requests among `seen` (not the listeners' canaries)."""
    return [line for line in seen if 'PUBLISH" "hub:mb:' in line and '" "q[' in line]


async def test_a_forward_reaches_the_holder_with_the_same_bytes_and_its_status(
    nodes: Cluster,
) -> None:
    session = new_session()
    await nodes.b.mailbox.register(session)
    async with monitored(nodes.where) as seen:
        assert await nodes.a.mailbox.forward(session, SUB, TENANT, BODY) == ACCEPTED
    assert nodes.b.holder.requests == [(session, SUB, TENANT, BODY)]
    if nodes.where is not None:  # a read, the request, the reply
        assert len(requests_published(seen)) == 1
        publish = "SPUBLISH" if isinstance(nodes.where, RedisCluster) else "PUBLISH"
        assert mailbox_commands(seen) == ["GET", publish, publish], seen
    assert await nodes.a.mailbox.forward(session, "intruder", TENANT, b"[]") == FORBIDDEN
    assert await nodes.a.mailbox.forward(session, SUB, None, b"") == FORBIDDEN
    assert nodes.b.holder.requests[1:] == [
        (session, "intruder", TENANT, b"[]"),
        (session, SUB, None, b""),
    ]
    assert nodes.a.holder.requests == []


async def test_a_node_forwarding_to_a_session_it_holds_reaches_its_own_stream_code(
    nodes: Cluster,
) -> None:
    session = new_session()
    await nodes.a.mailbox.register(session)
    assert await nodes.a.mailbox.forward(session, SUB, TENANT, BODY) == ACCEPTED
    assert nodes.a.holder.requests == [(session, SUB, TENANT, BODY)]


async def test_an_unknown_session_is_404_after_one_read_and_nothing_sent(
    nodes: Cluster,
) -> None:
    unknown = [new_session() for _ in range(5)]
    async with monitored(nodes.where) as seen:
        for session in unknown:
            assert await nodes.a.mailbox.forward(session, SUB, TENANT, BODY) == NOT_FOUND
    assert nodes.b.holder.requests == []
    assert requests_published(seen) == []
    if nodes.where is not None:
        assert mailbox_commands(seen) == ["GET"] * len(unknown), seen


async def test_an_unregistered_session_is_404(nodes: Cluster) -> None:
    session = new_session()
    await nodes.b.mailbox.register(session)
    await nodes.b.mailbox.unregister(session)
    assert await nodes.a.mailbox.forward(session, SUB, TENANT, BODY) == NOT_FOUND
    assert nodes.b.holder.requests == []


async def test_a_stopped_holder_is_404_at_once_though_its_key_is_left(nodes: Cluster) -> None:
    session = new_session()
    await nodes.b.mailbox.register(session)
    await nodes.b.mailbox.stop()
    if nodes.where is not None:
        a = nodes.a.mailbox
        assert isinstance(a, RedisMailbox)
        assert await a._redis.get(session_key(session)) is not None
    began = time.monotonic()
    assert await nodes.a.mailbox.forward(session, SUB, TENANT, BODY) == NOT_FOUND
    assert time.monotonic() - began < SHORT_TIMEOUT
    assert nodes.b.holder.requests == []


async def test_a_holder_that_does_not_answer_is_404_after_the_timeout(
    nodes: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in ("hub.mailbox.memory", "hub.mailbox.redis"):
        monkeypatch.setattr(f"{module}.REPLY_TIMEOUT", SHORT_TIMEOUT)
    nodes.b.holder.gate = asyncio.Event()
    session = new_session()
    await nodes.b.mailbox.register(session)
    began = time.monotonic()
    assert await nodes.a.mailbox.forward(session, SUB, TENANT, BODY) == NOT_FOUND
    assert SHORT_TIMEOUT <= time.monotonic() - began < SHORT_TIMEOUT + 1
    assert len(nodes.b.holder.requests) == 1
    nodes.b.holder.gate.set()  # the late reply is dropped: nobody waits for it
    await asyncio.sleep(0.1)
    assert nodes.a.mailbox.forwards == 0


async def test_forwards_from_one_node_reach_the_holder_in_the_order_made(
    nodes: Cluster,
) -> None:
    session = new_session()
    await nodes.b.mailbox.register(session)
    bodies = [f'{{"n":{n}}}'.encode() for n in range(300)]
    forwards = [nodes.a.mailbox.forward(session, SUB, TENANT, body) for body in bodies]
    assert await asyncio.gather(*forwards) == [ACCEPTED] * len(bodies)
    assert [body for _, _, _, body in nodes.b.holder.requests] == bodies


async def test_forwards_to_random_ids_stay_within_the_bound(nodes: Cluster) -> None:
    """Past `FORWARDS_IN_FLIGHT` forwards answer 503 at once; nothing is left behind."""
    count = FORWARDS_IN_FLIGHT * 3
    tasks = [
        asyncio.create_task(nodes.a.mailbox.forward(new_session(), SUB, TENANT, BODY))
        for _ in range(count)
    ]
    peak = 0
    while not all(task.done() for task in tasks):
        peak = max(peak, nodes.a.mailbox.forwards)
        await asyncio.sleep(0)
    statuses = [task.result() for task in tasks]
    assert peak <= FORWARDS_IN_FLIGHT
    assert set(statuses) <= {NOT_FOUND, UNAVAILABLE}
    assert statuses.count(NOT_FOUND) >= 1
    assert nodes.a.mailbox.forwards == 0
    if isinstance(nodes.a.mailbox, RedisMailbox):  # every forward waited on Redis at first
        assert peak == FORWARDS_IN_FLIGHT
        assert statuses.count(UNAVAILABLE) == count - FORWARDS_IN_FLIGHT
        assert nodes.a.mailbox._pending == {}
        assert nodes.a.mailbox._outgoing == []
    assert nodes.b.holder.requests == []


async def test_a_redis_outage_is_503_and_a_restarted_redis_gets_the_sessions_back(
    redis_server: RedisServer,
) -> None:
    """The listeners subscribe again with backoff, and the refresh (every `HUB_NODE_TTL`/3)
    writes again the keys of the sessions held, which the restarted Redis lost."""
    async with started(redis_server, node_ttl=1.5) as nodes:
        session = new_session()
        await nodes.b.mailbox.register(session)
        redis_server.stop()
        await until(lambda: not nodes.a.mailbox.available, "the listener to notice")
        assert await nodes.a.mailbox.forward(session, SUB, TENANT, BODY) == UNAVAILABLE
        with pytest.raises(BrokerUnavailable):
            await nodes.b.mailbox.register(new_session())
        redis_server.start()
        await until(lambda: nodes.a.mailbox.available and nodes.b.mailbox.available, "back")

        async def reached() -> bool:
            return await nodes.a.mailbox.forward(session, SUB, TENANT, BODY) == ACCEPTED

        await eventually(reached, DEADLINE, "the session's key written again")


def agrees(cluster: RedisCluster) -> bool:
    """Whether the cluster's nodes agree on its slots, as a reshard needs."""
    where = f"127.0.0.1:{cluster.masters()[0].port}"
    checked = subprocess.run(["redis-cli", "--cluster", "check", where], capture_output=True)
    return checked.returncode == 0


async def test_nodes_whose_channels_slots_move_are_reached_again(
    own_cluster: RedisCluster,
) -> None:
    """The shard says `sunsubscribe`, and the listener subscribes on the shard that took
    the slot; the master that gave it away, now its replica, counts no receiver of a
    publish sent by the old map of the slots, so the sender learns them again. First the
    holder's channel moves (the requests'), then the forwarder's (the replies')."""
    async with started(own_cluster) as nodes:
        session = new_session()
        await nodes.b.mailbox.register(session)

        async def reached() -> bool:
            return await nodes.a.mailbox.forward(session, SUB, TENANT, BODY) == ACCEPTED

        for node in (nodes.b, nodes.a):
            assert node.parts is not None
            await eventually(lambda: agrees(own_cluster), DEADLINE, "the cluster to settle")
            source = own_cluster.master_of(channel_of(node.parts.run).decode())
            target = next(master for master in own_cluster.masters() if master is not source)
            await asyncio.to_thread(own_cluster.move_slots, source, target)
            await eventually(reached, DEADLINE, "the nodes through the shard that took the slot")
