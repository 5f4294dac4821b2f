"""The webhook engine: each `status` event a tenant's endpoints hear about reaches each of
them once across the cluster, signed, retried with the same id, in order per device, an
offline held back for the grace; a dead node's messages are delivered by another; one
slow endpoint holds back nobody else.

Engines run in this process, two on one Redis standing for two nodes; receivers are real
HTTP servers on loopback; events are appended to the `status` stream in the bytes the hub
writes there (or published through the in-process broker, for a node alone).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from hub import envelope
from hub.auth import STATUS_ROOM
from hub.broker import Outgoing
from hub.broker.memory import MemoryBroker
from hub.config import Deployment, Settings
from hub.errors import ErrorCode, HubError
from hub.history import Retention
from hub.metrics import Metrics
from hub.presence.scripts import NODES
from hub.redis.clients import Clients, clients
from hub.rooms import RoomKey
from hub.webhooks.model import OFFLINE, ONLINE, RECEIPT, State, message_id
from hub.webhooks.redis import RedisStore
from hub.webhooks.scripts import GROUP, base, status_stream
from hub.webhooks.sender import Sender
from hub.webhooks.service import Webhooks, memory_webhooks
from tests.conftest import Redis
from tests.support import SECRET, RedisCluster, eventually
from tests.webhook_receiver import Answer, Receiver

TENANT, OTHER = "acme", "globex"
LEASE = 1.0
POLL = 0.05
GRACE = 0.5
DEADLINE = 10.0
STATUS_KEPT = Retention(1000, 3600)


def settings(**values: Any) -> Settings:
    """Short waits, loopback receivers allowed."""
    return Settings(
        jwt_secret=SECRET,
        webhook_allow_private=True,
        webhook_retry_base=0.1,
        webhook_offline_grace=GRACE,
        **values,
    )


Make = Callable[..., Receiver]


@pytest.fixture
def receiver() -> Iterator[Make]:
    made: list[Receiver] = []

    def make(*answers: Answer) -> Receiver:
        made.append(Receiver(*answers))
        return made[-1]

    yield make
    for started in made:
        started.stop()


def ids(hook: Receiver) -> list[str]:
    """The webhook-id of each request the endpoint got, failed attempts too, in order."""
    return [request.id for request in hook.received]


def types(hook: Receiver) -> list[str]:
    return [request.message["type"] for request in hook.received]


def delivered(
    engine: Webhooks, endpoint_id: str, attempts: int | None = None
) -> Callable[[], Awaitable[bool]]:
    """A condition: the endpoint's newest message is logged delivered (after `attempts`)."""

    async def logged() -> bool:
        found = await engine.deliveries(TENANT, endpoint_id, 1)
        if not found:
            return False
        newest = found[0]
        return newest.state is State.DELIVERED and attempts in (None, newest.attempts)

    return logged


class Cluster:
    """Engines on one Redis, each standing for a node, and a client to publish with."""

    def __init__(self, where: Redis, **values: Any) -> None:
        cluster = isinstance(where, RedisCluster)
        self.settings = settings(redis_url=where.url, redis_cluster=cluster, **values)
        self._deployment = Deployment(where.url, cluster=cluster)
        self.connections: list[Clients] = []
        self.engines: list[Webhooks] = []
        self.stores: list[RedisStore] = []
        self.metrics: list[Metrics] = []

    async def connect(self) -> Clients:
        made = clients(self._deployment, 4)
        await made.start()
        self.connections.append(made)
        return made

    async def engine(self, run: str, *, start: bool = True) -> Webhooks:
        connections = await self.connect()
        store = RedisStore(
            connections.writes,
            run,
            self.settings.webhook_max_pending,
            self.settings.webhook_offline_grace,
            LEASE,
        )
        metrics = Metrics()
        engine = Webhooks(self.settings, store, Sender(allow_private=True), metrics, poll=POLL)
        if start:
            await engine.start()
        self.engines.append(engine)
        self.stores.append(store)
        self.metrics.append(metrics)
        return engine

    async def publish(self, tenant: str, name: str, data: dict[str, Any], ts: int = 0) -> str:
        """Append a `status` event as the hub does; its entry id."""
        payload = envelope.encode(STATUS_ROOM, name, data, ts or int(time.time() * 1000))
        prefix, _ = envelope.parts(payload, keeps_history=True)
        writer = self.connections[0].writes
        entry = await writer.xadd(status_stream(tenant), {"p": prefix})
        return entry.decode() if isinstance(entry, bytes) else str(entry)

    async def close(self) -> None:
        for engine in self.engines:
            await engine.stop()
        for connections in self.connections:
            await connections.close()


@pytest.fixture
async def cluster(redis: Redis) -> AsyncIterator[Cluster]:
    """Engines on one redis-server, and on a Redis Cluster."""
    made = Cluster(redis)
    await made.connect()
    yield made
    await made.close()


@pytest.fixture
async def on_redis(redis_server: Redis) -> AsyncIterator[Callable[..., Awaitable[Cluster]]]:
    """Engines on one redis-server, with settings of the test's own."""
    made: list[Cluster] = []

    async def make(**values: Any) -> Cluster:
        built = Cluster(redis_server, **values)
        await built.connect()
        made.append(built)
        return built

    yield make
    for built in made:
        await built.close()


async def test_a_message_is_delivered_once_across_two_nodes(
    cluster: Cluster, receiver: Make
) -> None:
    hook = receiver()
    a = await cluster.engine("node-a")
    b = await cluster.engine("node-b")
    endpoint, secret = await a.register(TENANT, hook.url, [ONLINE, RECEIPT], "back office")
    assert secret.startswith("whsec_")
    assert [listed.as_json() for listed in await b.endpoints(TENANT)] == [endpoint.as_json()]
    assert "secret" not in endpoint.as_json()
    entry = await cluster.publish(TENANT, ONLINE, {"device": "d1", "node": "n1"}, ts=1234)
    await cluster.publish(TENANT, "device.heartbeat", {"device": "d1", "cpu": 3})
    await eventually(lambda: bool(hook.received), DEADLINE, "the message")
    await asyncio.sleep(0.5)  # both nodes poll ten times meanwhile
    assert len(hook.received) == 1
    request = hook.received[0]
    assert request.id == message_id(TENANT, entry)
    assert hook.verified(secret) == [
        {"type": ONLINE, "tenant": TENANT, "time": 1234, "data": {"device": "d1", "node": "n1"}}
    ]
    await eventually(delivered(b, endpoint.id), DEADLINE, "the delivery logged")
    found = await b.deliveries(TENANT, endpoint.id, 10)
    assert found is not None
    assert [delivery.as_json() for delivery in found] == [
        {
            "id": request.id,
            "type": ONLINE,
            "device": "d1",
            "time": 1234,
            "state": "delivered",
            "attempts": 1,
            "status": 200,
            "error": None,
            "next": None,
        }
    ]


async def test_a_failing_receiver_gets_the_same_id_until_it_takes_the_message(
    on_redis: Callable[..., Awaitable[Cluster]], receiver: Make
) -> None:
    cluster = await on_redis()
    hook = receiver(500, 503, 500)
    engine = await cluster.engine("node-a")
    endpoint, _ = await engine.register(TENANT, hook.url, [RECEIPT], None)
    receipt = {"sub": "d7", "role": "device", "room": "r", "id": "1-0", "status": "shown"}
    entry = await cluster.publish(TENANT, RECEIPT, receipt)
    await eventually(lambda: len(hook.received) >= 4, DEADLINE, "three retries")
    assert ids(hook) == [message_id(TENANT, entry)] * 4
    await eventually(delivered(engine, endpoint.id), DEADLINE, "the message delivered")
    found = await engine.deliveries(TENANT, endpoint.id, 1)
    assert found is not None
    assert (found[0].attempts, found[0].status, found[0].device) == (4, 200, "d7")
    registry = cluster.metrics[0].registry
    sample = registry.get_sample_value
    assert sample("hub_webhook_deliveries_total", {"outcome": "delivered"}) == 1
    assert sample("hub_webhook_retries_total") == 3
    assert sample("hub_webhook_attempt_seconds_count") == 4
    assert sample("hub_webhook_pending") == 0
    assert sample("hub_webhook_oldest_pending_seconds") == 0


async def test_an_offline_undone_within_the_grace_sends_nothing_and_after_it_both(
    on_redis: Callable[..., Awaitable[Cluster]], receiver: Make
) -> None:
    cluster = await on_redis()
    hook = receiver()
    engine = await cluster.engine("node-a")
    await engine.register(TENANT, hook.url, [ONLINE, OFFLINE, RECEIPT], None)
    now = int(time.time() * 1000)
    await cluster.publish(TENANT, OFFLINE, {"device": "d1", "reason": "closed"}, ts=now)
    await cluster.publish(TENANT, ONLINE, {"device": "d1"}, ts=now + 200)
    receipt = {"sub": "d1", "role": "device", "room": "r", "id": "1-0", "status": "shown"}
    await cluster.publish(TENANT, RECEIPT, receipt, ts=now + 300)
    # the receipt follows the device's earlier messages: it comes once they are settled
    await eventually(lambda: bool(hook.received), DEADLINE, "the receipt")
    assert types(hook) == [RECEIPT]

    later = int(time.time() * 1000)
    await cluster.publish(TENANT, OFFLINE, {"device": "d1", "reason": "closed"}, ts=later)
    await asyncio.sleep(GRACE + 0.3)
    await cluster.publish(TENANT, ONLINE, {"device": "d1"})
    await eventually(lambda: len(hook.received) == 3, DEADLINE, "offline then online")
    assert types(hook) == [RECEIPT, OFFLINE, ONLINE]


async def test_a_node_that_dies_holding_messages_has_them_delivered_by_another(
    on_redis: Callable[..., Awaitable[Cluster]],
    receiver: Make,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = await on_redis()
    held = threading.Event()
    hook = receiver(held)
    a = await cluster.engine("node-a")
    await a.register(TENANT, hook.url, [ONLINE], None)
    entry = await cluster.publish(TENANT, ONLINE, {"device": "d1"})
    await eventually(lambda: bool(hook.received), DEADLINE, "the first attempt")
    b = await cluster.engine("node-b")

    async def keeps_its_leases(tenants: list[str]) -> None:
        """A dead node gives nothing up."""

    monkeypatch.setattr(cluster.stores[0], "release", keeps_its_leases)
    await a.stop()
    held.set()
    await eventually(lambda: len(hook.received) == 2, DEADLINE, "the other node's attempt")
    assert ids(hook) == [message_id(TENANT, entry)] * 2
    assert b is cluster.engines[1]


async def test_entries_a_dead_reader_took_are_claimed_by_the_next(
    on_redis: Callable[..., Awaitable[Cluster]], receiver: Make
) -> None:
    cluster = await on_redis()
    hook = receiver()
    engine = await cluster.engine("node-a", start=False)
    await engine.register(TENANT, hook.url, [ONLINE], None)
    entry = await cluster.publish(TENANT, ONLINE, {"device": "d1"})
    reader = cluster.connections[0].writes
    taken: Any = await reader.xreadgroup(GROUP, "dead", {status_stream(TENANT): ">"}, count=10)
    assert len(taken[0][1]) == 1
    await engine.start()
    await eventually(lambda: bool(hook.received), DEADLINE, "the claimed message")
    assert ids(hook) == [message_id(TENANT, entry)]
    assert await reader.xpending(status_stream(TENANT), GROUP) == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }


async def test_a_slow_endpoint_of_one_tenant_does_not_hold_back_another(
    on_redis: Callable[..., Awaitable[Cluster]], receiver: Make
) -> None:
    cluster = await on_redis()
    stuck = threading.Event()
    slow = receiver(*[stuck] * 20)
    quick = receiver()
    engine = await cluster.engine("node-a")
    await engine.register(TENANT, slow.url, [ONLINE], None)
    await engine.register(OTHER, quick.url, [ONLINE], None)
    for device in range(8):
        await cluster.publish(TENANT, ONLINE, {"device": f"d{device}"})
    await eventually(lambda: len(slow.received) == 4, DEADLINE, "the slow endpoint full")
    await cluster.publish(OTHER, ONLINE, {"device": "x1"})
    await eventually(lambda: bool(quick.received), DEADLINE, "the other tenant's message")
    assert len(slow.received) == 4
    assert not stuck.is_set()
    stuck.set()
    await eventually(lambda: len(slow.received) == 8, DEADLINE, "the slow endpoint caught up")


async def test_a_receiver_answering_410_removes_its_endpoint(
    on_redis: Callable[..., Awaitable[Cluster]], receiver: Make
) -> None:
    cluster = await on_redis()
    gone = receiver(410)
    engine = await cluster.engine("node-a")
    endpoint, _ = await engine.register(TENANT, gone.url, [ONLINE], None)
    await cluster.publish(TENANT, ONLINE, {"device": "d1"})

    async def removed() -> bool:
        return not await engine.endpoints(TENANT)

    await eventually(removed, DEADLINE, "the endpoint removed")
    assert await engine.deliveries(TENANT, endpoint.id, 10) is None
    assert len(gone.received) == 1


async def test_past_the_pending_bound_the_oldest_messages_fail(
    on_redis: Callable[..., Awaitable[Cluster]], receiver: Make
) -> None:
    cluster = await on_redis(webhook_max_pending=10)
    stuck = threading.Event()
    hook = receiver(stuck)
    engine = await cluster.engine("node-a")
    endpoint, _ = await engine.register(TENANT, hook.url, [ONLINE], None)
    for _ in range(15):
        await cluster.publish(TENANT, ONLINE, {"device": "d1"})

    async def bounded() -> bool:
        found = await engine.deliveries(TENANT, endpoint.id, 100)
        return found is not None and len(found) == 15 and found[-1].state.value == "failed"

    await eventually(bounded, DEADLINE, "the backlog bounded")
    found = await engine.deliveries(TENANT, endpoint.id, 100)
    assert found is not None
    states = [delivery.state.value for delivery in reversed(found)]
    assert states == ["failed"] * 5 + ["pending"] * 10
    assert {delivery.error for delivery in found[-5:]} == {"backlog over 10"}
    stuck.set()


async def test_a_retry_sends_a_message_again_with_its_id_and_attempts(
    on_redis: Callable[..., Awaitable[Cluster]], receiver: Make
) -> None:
    cluster = await on_redis()
    hook = receiver()
    a = await cluster.engine("node-a")
    b = await cluster.engine("node-b", start=False)
    endpoint, _ = await a.register(TENANT, hook.url, [ONLINE], None)
    await cluster.publish(TENANT, ONLINE, {"device": "d1"})
    await eventually(lambda: bool(hook.received), DEADLINE, "the message")
    webhook_id = ids(hook)[0]
    await eventually(delivered(b, endpoint.id), DEADLINE, "the delivery logged")
    assert await b.retry(TENANT, endpoint.id, webhook_id)
    assert not await b.retry(TENANT, endpoint.id, "msg_unknown")
    await eventually(lambda: len(hook.received) == 2, DEADLINE, "the message again")
    assert ids(hook) == [webhook_id] * 2
    await eventually(delivered(b, endpoint.id, 2), DEADLINE, "the second attempt logged")


async def test_registration_checks_what_it_is_given(
    on_redis: Callable[..., Awaitable[Cluster]], receiver: Make
) -> None:
    cluster = await on_redis(webhook_max_endpoints=1)
    hook = receiver()
    engine = await cluster.engine("node-a", start=False)
    refusals = [
        ("not a url", [ONLINE], None),
        (hook.url, [], None),
        (hook.url, ["device.heartbeat"], None),
        (hook.url, [ONLINE, ONLINE], None),
        (hook.url, ONLINE, None),
        (hook.url, [ONLINE], "x" * 257),
        (hook.url, [ONLINE], 5),
    ]
    for url, events, description in refusals:
        with pytest.raises(HubError) as refused:
            await engine.register(TENANT, url, events, description)
        assert refused.value.code is ErrorCode.BAD_REQUEST, (url, events, description)
    await engine.register(TENANT, hook.url, [ONLINE], None)
    with pytest.raises(HubError) as full:
        await engine.register(TENANT, hook.url, [OFFLINE], None)
    assert full.value.code is ErrorCode.CONFLICT
    assert len(await engine.endpoints(TENANT)) == 1


async def test_without_a_key_registration_is_refused() -> None:
    keyless = Settings(jwt_jwks_url="https://issuer.example/jwks", webhook_allow_private=True)
    engine = memory_webhooks(keyless, Metrics(), MemoryBroker())
    with pytest.raises(HubError) as refused:
        await engine.register(TENANT, "http://127.0.0.1:9/", [ONLINE], None)
    assert refused.value.code is ErrorCode.UNAVAILABLE
    assert "HUB_WEBHOOK_KEY" in refused.value.message


async def test_a_node_alone_delivers_from_memory(receiver: Make) -> None:
    broker = MemoryBroker()
    engine = memory_webhooks(settings(), Metrics(), broker)
    await engine.start()
    try:
        hook = receiver(500)
        endpoint, secret = await engine.register(TENANT, hook.url, [ONLINE, OFFLINE], "office")

        def publish(name: str, data: dict[str, Any], ts: int) -> str:
            payload = envelope.encode(STATUS_ROOM, name, data, ts)
            key = RoomKey(TENANT, STATUS_ROOM)
            [entry] = broker.publish_now([Outgoing.of(key, payload, STATUS_KEPT)])
            assert entry is not None
            return entry

        now = int(time.time() * 1000)
        publish(OFFLINE, {"device": "d1", "reason": "closed"}, now)
        publish(ONLINE, {"device": "d1"}, now + 100)
        publish("device.heartbeat", {"device": "d1"}, now + 150)
        entry = publish(ONLINE, {"device": "d2"}, now + 200)
        await eventually(lambda: len(hook.received) == 2, DEADLINE, "d2 online, retried")
        assert ids(hook) == [message_id(TENANT, entry)] * 2
        assert types(hook) == [ONLINE, ONLINE]
        assert [message["data"] for message in hook.verified(secret)] == [{"device": "d2"}]

        async def logged() -> bool:
            found = await engine.deliveries(TENANT, endpoint.id, 10)
            return found is not None and [(d.device, d.attempts) for d in found] == [("d2", 2)]

        await eventually(logged, DEADLINE, "the delivery logged")
        assert await engine.retry(TENANT, endpoint.id, ids(hook)[0])
        await eventually(lambda: len(hook.received) == 3, DEADLINE, "the retry")
        assert await engine.remove(TENANT, endpoint.id)
        assert await engine.endpoints(TENANT) == []
        assert not await engine.remove(TENANT, endpoint.id)
    finally:
        await engine.stop()


async def test_the_pending_gauges_count_what_this_node_holds(
    on_redis: Callable[..., Awaitable[Cluster]], receiver: Make
) -> None:
    cluster = await on_redis()
    stuck = threading.Event()
    hook = receiver(stuck)
    engine = await cluster.engine("node-a")
    await engine.register(TENANT, hook.url, [ONLINE], None)
    for _ in range(3):
        await cluster.publish(TENANT, ONLINE, {"device": "d1"})
    sample = cluster.metrics[0].registry.get_sample_value
    await eventually(lambda: sample("hub_webhook_pending") == 3, DEADLINE, "three pending")
    await asyncio.sleep(0.2)
    assert (sample("hub_webhook_oldest_pending_seconds") or 0) >= 0.2
    stuck.set()
    await eventually(lambda: sample("hub_webhook_pending") == 0, DEADLINE, "none pending")


async def test_nodes_share_the_tenants(
    on_redis: Callable[..., Awaitable[Cluster]], receiver: Make
) -> None:
    cluster = await on_redis()
    writer = cluster.connections[0].writes
    await writer.zadd(NODES, {"node-a#1": time.time() * 1000 + 60_000, "node-b#1": 0})
    hook = receiver()
    a = await cluster.engine("node-a", start=False)
    tenants = [f"t{n}" for n in range(4)]
    for tenant in tenants:
        await a.register(tenant, hook.url, [ONLINE], None)
    await a.start()
    await eventually(lambda: _held_by(writer, tenants, "node-a", 3), DEADLINE, "a's share")
    await cluster.engine("node-b")
    await eventually(lambda: _held_by(writer, tenants, "node-b", 1), DEADLINE, "b's share")
    for tenant in tenants:
        await cluster.publish(tenant, ONLINE, {"device": "d1"})
    await eventually(lambda: len(hook.received) == 4, DEADLINE, "every tenant's message")
    assert sorted(request.message["tenant"] for request in hook.received) == tenants


async def _held_by(writer: Any, tenants: list[str], run: str, count: int) -> bool:
    """Whether `run` holds the leases of `count` of `tenants`."""
    holders = [await writer.get(base(tenant) + "lease") for tenant in tenants]
    return holders.count(run.encode()) == count


async def test_a_status_stream_that_expired_is_read_again_from_its_start(
    on_redis: Callable[..., Awaitable[Cluster]], receiver: Make
) -> None:
    cluster = await on_redis()
    hook = receiver()
    engine = await cluster.engine("node-a")
    await engine.register(TENANT, hook.url, [ONLINE], None)
    await cluster.publish(TENANT, ONLINE, {"device": "d1"})
    await eventually(lambda: len(hook.received) == 1, DEADLINE, "the first message")
    await cluster.connections[0].writes.delete(status_stream(TENANT))
    entry = await cluster.publish(TENANT, ONLINE, {"device": "d2"})
    await eventually(lambda: len(hook.received) == 2, DEADLINE, "the message of the new stream")
    assert ids(hook)[1] == message_id(TENANT, entry)
