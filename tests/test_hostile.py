"""Hostile and broken clients: each gets a clear refusal or close, and none can make the
node hold memory for it without bound."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from hub.broker import MemoryBroker, Outgoing, memory
from hub.disconnect import RATE_LIMITED, SLOW_CONSUMER
from hub.history import LAST_ID, Retention
from hub.rooms import RoomKey
from loadtest.wire import frame
from tests.conftest import NodeFactory
from tests.inprocess import running
from tests.support import Client, HubNode, RedisServer, eventually, raw_upgrade, token

_PING = 0x9


@pytest.fixture(scope="module")
def shared_redis(module_redis: RedisServer, module_nodes: NodeFactory) -> HubNode:
    """One node on a shared Redis for the tests that count only their own tenant's rooms
    and events; none that counts or changes what is in Redis as a whole. (Redis first: it
    is stopped after the node.)"""
    return module_nodes("a", module_redis.url)


async def test_pongs_count_against_the_send_queue() -> None:
    async with running(send_queue_bytes=4096, client_rate=0) as hub:
        peer = await hub.connect(token("dashboard", "d"))
        for _ in range(40):
            peer.wire.ping(127)
        await asyncio.wait_for(peer.task, 2)
        assert peer.wire.cause is SLOW_CONSUMER


async def test_pings_count_against_the_frame_rate() -> None:
    async with running(client_rate=1, client_burst=3) as hub:
        peer = await hub.connect(token("dashboard", "d"))
        for _ in range(10):
            peer.wire.ping(0)
        await asyncio.wait_for(peer.task, 2)
        assert peer.wire.cause is RATE_LIMITED


async def test_a_peer_that_pings_and_never_reads_is_shed(hub_node: NodeFactory) -> None:
    node = hub_node("solo", send_queue_bytes=65536, client_rate=0, ping_interval=600)
    raw = raw_upgrade(node.port, receive_buffer=4096, bearer=token("dashboard", "pinger"))
    ping = frame(_PING, b"p" * 120)
    raw.setblocking(False)
    loop = asyncio.get_running_loop()

    def shed() -> bool:
        return "hub_slow_consumers_total 1.0" in node.get("/metrics").text

    # Ping, never reading, until the node sheds the socket: however slowly the node
    # answers, its pongs pile up once the kernels' buffers are full.
    with contextlib.suppress(OSError):  # the node may close while pings are on their way
        for _ in range(600):
            for _ in range(20):
                await loop.sock_sendall(raw, ping * 50)
            if await asyncio.to_thread(shed):
                break
    await eventually(shed, 30, "the pinging socket to be shed")
    raw.setblocking(True)
    raw.settimeout(10)
    received = bytearray()
    closing = b"\x88\x0f\x0f\xa9slow consumer"
    try:
        while closing not in received[-4096:]:
            chunk = raw.recv(65536)
            if not chunk:
                break
            received += chunk
    finally:
        raw.close()
    assert closing in received, "a 4009 close frame"
    # What the kernels held and the 64 KiB queue, not every pong asked for.
    assert len(received) < 15_000_000, "the node buffered far past HUB_SEND_QUEUE_BYTES"


async def test_an_id_redis_would_reject_is_a_bad_request_and_leaves_no_room(
    shared_redis: HubNode,
) -> None:
    node, tenant = shared_redis, "hostile-bad-id"
    operator = token("operator", "o", tenant)  # its stats count this tenant's rooms only
    rooms_before = node.get("/v1/stats", operator).json()["node"]["rooms"]
    for since in ("1-0\n", "18446744073709551616-0", "1-99999999999999999999"):
        client = await Client.connect(node, token("dashboard", "d", tenant))
        answer = await client.request("subscribe", room=f"location:{len(since)}", since=since)
        assert (answer["type"], answer["code"]) == ("error", "bad_request")
        assert "2^64" in answer["message"]
        await client.close()
    # The largest id passes the check, and nothing can follow it: input, not an outage.
    client = await Client.connect(node, token("dashboard", "d", tenant))
    answer = await client.request("subscribe", room="location:last", since=LAST_ID)
    assert (answer["type"], answer["recovered"]) == ("ack", False)
    await client.close()
    page = node.get(f"/v1/rooms/location:last/history?since={LAST_ID}", operator)
    assert (page.status_code, page.json()["events"]) == (200, [])

    def rooms_back() -> bool:
        stats = node.get("/v1/stats", operator).json()
        return bool(stats["node"]["rooms"] == rooms_before)

    await eventually(rooms_back, 10, "the refused rooms to be left")


async def test_data_nested_too_deep_is_refused_not_a_1011(refusing: HubNode) -> None:
    bearer = token("dashboard", "d", "hostile-deep", publish=["r"])
    client = await Client.connect(refusing, bearer)
    deep = '{"a":' * 300 + "1" + "}" * 300  # deeper than any encoder here takes
    await client.ws.send('{"op":"publish","room":"r","event":"x.deep","ref":1,"data":' + deep + "}")
    answer = await client.recv()
    assert (answer["type"], answer["code"], answer["ref"]) == ("error", "bad_request", 1)
    assert (await client.request("ping"))["type"] == "pong"
    await client.close()


def _output_since(node: HubNode, began: int) -> str:
    """What the node wrote after `began` bytes of its log: on a shared node, this test's."""
    with node.log.open("rb") as log:
        log.seek(began)
        return log.read().decode(errors="replace")


async def test_a_token_behind_a_quote_in_the_query_is_redacted_and_the_access_line_kept(
    shared_single: HubNode,
) -> None:
    began = shared_single.log.stat().st_size
    secret = token("dashboard", "d", "hostile-quote")
    answer = httpx.get(f"{shared_single.url}/healthz", params={"a": '"', "token": secret})
    assert answer.status_code == 200
    ws = await connect(f"{shared_single.ws_url}?a=%22&token={secret}", compression=None)
    await ws.close()
    await eventually(
        lambda: "[accepted]" in _output_since(shared_single, began), 5, "the accept line"
    )
    log = _output_since(shared_single, began)
    assert secret not in log
    assert "Traceback" not in log
    assert 'GET /healthz?a=%22&token=[redacted] HTTP/1.1" 200' in log
    assert "/v1/ws?a=%22&token=[redacted]" in log


async def test_heartbeats_past_their_rate_are_refused_and_not_published() -> None:
    async with running(heartbeat_rate=0.1) as hub:
        status = await hub.connect(token("dashboard", "d"))
        await status.answer({"op": "subscribe", "room": "status", "ref": 0})
        device = await hub.connect(token("device", "p1"))
        for n in range(8):
            device.send({"op": "heartbeat", "data": {"status": "ok"}, "ref": n})
        refused = [await device.next() for _ in range(3)]
        assert [(f["code"], f["ref"]) for f in refused] == [("rate_limited", n) for n in (5, 6, 7)]
        await status.settled()
        beats = [f for f in status.wire.frames() if f.get("event") == "device.heartbeat"]
        assert len(beats) == 5


async def test_a_heartbeat_larger_than_its_bound_is_too_large() -> None:
    async with running(max_heartbeat_bytes=512) as hub:
        device = await hub.connect(token("device", "p1"))
        big = {"op": "heartbeat", "data": {"status": "ok", "content": "c" * 600}, "ref": 1}
        answer = await device.answer(big)
        assert (answer["code"], answer["ref"]) == ("too_large", 1)


async def test_a_socket_may_be_in_a_bounded_number_of_rooms() -> None:
    async with running(max_rooms_per_socket=20) as hub:
        socket = await hub.connect(token("dashboard", "d"))
        for n in range(20):
            ack = await socket.answer({"op": "subscribe", "room": f"r{n}", "ref": n})
            assert ack["type"] == "ack"
        refused = await socket.answer({"op": "subscribe", "room": "one-more", "ref": 99})
        assert (refused["code"], refused["ref"]) == ("too_large", 99)
        again = await socket.answer({"op": "subscribe", "room": "r3", "ref": 100})
        assert again["type"] == "ack"


async def test_a_replay_longer_than_the_send_queue_reaches_a_client_that_reads() -> None:
    async with running(send_queue_bytes=16384) as hub:
        for n in range(100):
            await hub.publish("acme", ["location:a"], "x.n", {"n": n, "pad": "p" * 1000})
        socket = await hub.connect(token("dashboard", "d"))
        socket.wire.piling = True
        socket.send({"op": "subscribe", "room": "location:a", "since": "0-0", "ref": 1})
        replayed = [await socket.next() for _ in range(100)]
        assert [frame["data"]["n"] for frame in replayed] == list(range(100))
        assert (await socket.next())["type"] == "ack"
        assert socket.wire.cause is None


async def test_a_replay_longer_than_the_send_queue_reaches_a_real_client(
    hub_node: NodeFactory,
) -> None:
    node = hub_node("solo", send_queue_bytes=65536, broadcast_rate=0, tenant_publish_bytes=0)
    async with httpx.AsyncClient(base_url=node.url) as http:
        headers = {"Authorization": f"Bearer {token('operator', 'o')}"}
        for n in range(300):
            body = {"room": "location:a", "event": "x.n", "data": {"n": n, "pad": "p" * 40000}}
            assert (await http.post("/v1/broadcast", json=body, headers=headers)).status_code == 202
    client = await Client.connect(node, token("dashboard", "d"))
    await client.send({"op": "subscribe", "room": "location:a", "since": "0-0", "ref": 1})
    got = [(await client.recv())["data"]["n"] for _ in range(300)]
    assert got == list(range(300))
    assert (await client.recv())["type"] == "ack"
    await client.close()


async def test_joining_rooms_does_not_grow_what_each_presence_step_rewrites(
    hub_node: NodeFactory, redis_server: RedisServer
) -> None:
    node = hub_node("a", redis_server.url, client_rate=0)
    client = await Client.connect(node, token("dashboard", "d"))

    async def record_after(rooms: int) -> str:
        for n in range(rooms):
            await client.subscribe(f"r{n}")
        last = f"r{rooms - 1}"
        await eventually(lambda: bool(node.presence(last, token("operator", "o"))), 5, last)
        (key,) = redis_server.command("KEYS", "hub:pn:*").split()
        return redis_server.command("HVALS", key)

    assert await record_after(2) == await record_after(300)
    assert (
        redis_server.command("SCARD", redis_server.command("KEYS", "hub:ps:*").strip()) == "300\n"
    )
    await client.close()


async def _handshake_status(node: HubNode, bearer: str) -> int:
    try:
        ws = await connect(
            node.ws_url, additional_headers={"Authorization": f"Bearer {bearer}"}, compression=None
        )
    except InvalidStatus as refused:
        return refused.response.status_code
    await ws.close()
    return 101


async def test_one_subject_or_tenant_cannot_take_every_socket_of_a_node(
    hub_node: NodeFactory,
) -> None:
    node = hub_node("solo", max_sockets_per_sub=2, max_sockets_per_tenant=3)
    held = [await Client.connect(node, token("dashboard", "greedy")) for _ in range(2)]
    assert await _handshake_status(node, token("dashboard", "greedy")) == 429
    other = await Client.connect(node, token("dashboard", "other"))
    assert await _handshake_status(node, token("dashboard", "third")) == 429
    assert await _handshake_status(node, token("dashboard", "x", tenant="globex")) == 101
    await held.pop().close()
    await eventually(
        lambda: (
            node.get("/v1/stats", token("operator", "o")).json()["node"]["connections"]["total"]
            == 2
        ),
        5,
        "the closed socket to be gone",
    )
    held.append(await Client.connect(node, token("dashboard", "greedy")))
    for client in [*held, other]:
        await client.close()


async def test_tokens_living_longer_than_the_maximum_are_refused(hub_node: NodeFactory) -> None:
    node = hub_node("solo", max_token_ttl=600)
    assert await _handshake_status(node, token("dashboard", "d", ttl=3600)) == 401
    assert await _handshake_status(node, token("dashboard", "d", ttl=300)) == 101


async def test_presence_is_answered_in_pages(shared_single: HubNode) -> None:
    tenant = "hostile-pages"
    clients = [
        await Client.connect(shared_single, token("device", f"p{n}", tenant)) for n in range(5)
    ]
    operator = token("operator", "o", tenant)
    subs: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        params = {"limit": "2", **({"after": after} if after else {})}
        answer = shared_single.get("/v1/rooms/devices/presence", operator, **params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        subs += [member["sub"] for member in body["members"]]
        pages += 1
        after = body["next"]
        if after is None:
            break
    assert (subs, pages) == ([f"p{n}" for n in range(5)], 3)
    bad = shared_single.get("/v1/rooms/devices/presence", operator, after="nospace")
    assert bad.status_code == 400
    for client in clients:
        await client.close()


def test_reads_are_rate_limited_per_token(hub_node: NodeFactory) -> None:
    node = hub_node("solo", read_rate=2)
    reader, other = token("dashboard", "greedy"), token("dashboard", "other")
    answers = [node.get("/v1/rooms/r/history", reader).status_code for _ in range(6)]
    assert answers[:2] == [200, 200]
    assert 429 in answers[2:]
    refused = node.get("/v1/rooms/r/presence", reader)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert node.get("/v1/rooms/r/history", other).status_code == 200
    assert 'hub_refusals_total{code="rate_limited"}' in node.get("/metrics").text


async def test_readers_cannot_starve_publishes_of_redis_connections(
    hub_node: NodeFactory, redis_server: RedisServer
) -> None:
    node = hub_node("a", redis_server.url, redis_read_connections=2, broadcast_rate=0)
    bearers = [token("dashboard", f"d{n}") for n in range(40)]
    async with httpx.AsyncClient(base_url=node.url, timeout=20) as http:

        async def read(bearer: str) -> int:
            headers = {"Authorization": f"Bearer {bearer}"}
            return (await http.get("/v1/rooms/r/history", headers=headers)).status_code

        readers = [asyncio.create_task(read(bearer)) for bearer in bearers * 5]
        await asyncio.sleep(0.2)  # the reads are in flight, most of them queued
        clients = await asyncio.to_thread(redis_server.command, "CLIENT", "LIST")
        # 2 for reads, at most 8 for writes, the subscriber, and this redis-cli: however
        # many readers, not one connection each.
        assert len(clients.splitlines()) <= 12, clients
        published = await http.post(
            "/v1/broadcast",
            json={"room": "r", "event": "x.a", "data": {}},
            headers={"Authorization": f"Bearer {token('operator', 'o')}"},
        )
        assert published.status_code == 202
        assert set(await asyncio.gather(*readers)) == {200}


async def test_a_full_redis_refuses_publishes_with_503_and_loses_nothing_accepted(
    hub_node: NodeFactory, redis_server: RedisServer
) -> None:
    node = hub_node("a", redis_server.url, broadcast_rate=0)
    redis_server.command("CONFIG", "SET", "maxmemory-policy", "noeviction")
    used = int(redis_server.command("INFO", "memory").split("used_memory:")[1].split()[0])
    redis_server.command("CONFIG", "SET", "maxmemory", str(used + 2_000_000))
    accepted, refused = [], []
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        headers = {"Authorization": f"Bearer {token('operator', 'o')}"}
        for n in range(400):
            body = {"room": "r", "event": "x.n", "data": {"n": n, "pad": "p" * 20000}}
            answer = await http.post("/v1/broadcast", json=body, headers=headers)
            if answer.status_code == 202:
                accepted.append(answer.json()["ids"]["r"])
            else:
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"] == {
                    "code": "unavailable",
                    "message": "broker unavailable, retry",
                }
                refused.append(n)
    assert accepted
    assert len(refused) > 100
    redis_server.command("CONFIG", "SET", "maxmemory", "0")
    history = node.get("/v1/rooms/r/history", token("operator", "o"), limit="1000").json()
    assert [event["id"] for event in history["events"]] == accepted


async def test_a_frozen_redis_makes_the_node_unready_while_its_sockets_are_served(
    hub_node: NodeFactory, redis_server: RedisServer
) -> None:
    node = hub_node("a", redis_server.url)
    client = await Client.connect(node, token("dashboard", "d"))
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)
    try:

        def unready() -> bool:
            answer = node.get("/readyz")
            return answer.status_code == 503 and answer.json()["reason"] == "broker unreachable"

        await eventually(unready, 20, "readyz to say the broker is unreachable")
        assert (await client.request("ping"))["type"] == "pong"
        refused = await client.request("subscribe", room="location:new")
        assert refused["code"] == "unavailable"
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    await eventually(node.ready, 20, "the node to be ready again")
    assert (await client.request("subscribe", room="location:new"))["type"] == "ack"
    await client.close()


def _raw(node: HubNode) -> socket.socket:
    raw = socket.create_connection(("127.0.0.1", node.port), timeout=10)
    return raw


def _answer_of(raw: socket.socket) -> bytes:
    """Everything the node sends until it closes the connection."""
    got = b""
    while chunk := raw.recv(65536):
        got += chunk
    raw.close()
    return got


def test_headers_that_never_finish_are_answered_408_and_closed(hub_node: NodeFactory) -> None:
    node = hub_node("solo", header_timeout=1)
    raw = _raw(node)
    raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    answer = _answer_of(raw)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"code":"bad_request"' in answer


@pytest.mark.parametrize(
    ("request_", "what"),
    [
        (b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"p" * 20_000_000, "a header that never ends"),
        (
            b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"X-Long: " + b"l" * 9000 + b"\r\n\r\n",
            "an upgrade with a header line over 8 KiB",
        ),
    ],
)
def test_oversized_headers_are_answered_431_and_closed(
    shared_single: HubNode, request_: bytes, what: str
) -> None:
    raw = _raw(shared_single)
    with contextlib.suppress(OSError):  # the node may close while the rest is on its way
        raw.sendall(request_)
    answer = _answer_of(raw)
    assert answer.startswith(b"HTTP/1.1 431 "), (what, answer[:200])


def test_idle_connections_past_the_cap_cannot_starve_health_checks(
    hub_node: NodeFactory,
) -> None:
    node = hub_node("solo", max_pending_requests=20)
    idle = [_raw(node) for _ in range(60)]
    try:
        assert httpx.get(f"{node.url}/healthz", timeout=5).status_code == 200
        dropped = [raw for raw in idle[:30] if raw.recv(200).startswith(b"HTTP/1.1 408 ")]
        assert len(dropped) == 30
    finally:
        for raw in idle:
            raw.close()


async def test_the_broadcast_limit_holds_across_the_cluster_and_without_redis(
    hub_node: NodeFactory, redis_server: RedisServer
) -> None:
    nodes = [
        hub_node(name, redis_server.url, broadcast_rate=1, read_rate=5) for name in ("a", "b", "c")
    ]
    operator = token("operator", "o")
    answers = [
        nodes[n % 3].broadcast(operator, room="r", event="x.n", data={"n": n}).status_code
        for n in range(9)
    ]
    # A bucket per node would let 3 through at once (one per node); the shared one, 1.
    assert answers.count(202) <= 2, answers
    assert answers.count(429) >= 7
    redis_server.stop()
    await eventually(lambda: not nodes[0].ready(), 20, "the node to lose Redis")
    statuses = [nodes[0].get("/v1/stats", operator).status_code for _ in range(30)]
    # Reads go on being limited, node by node, while the shared buckets are out of reach.
    assert 429 in statuses, statuses


async def test_reads_share_one_limit_across_nodes(
    hub_node: NodeFactory, redis_server: RedisServer
) -> None:
    nodes = [hub_node(name, redis_server.url, read_rate=3) for name in ("a", "b")]
    reader = token("dashboard", "d")
    statuses = [nodes[n % 2].get("/v1/rooms/r/history", reader).status_code for n in range(12)]
    assert statuses.count(200) <= 5, statuses


@pytest.mark.parametrize("with_redis", [False, True])
async def test_a_tenant_is_bounded_in_bytes_published_and_rooms_with_history(
    hub_node: NodeFactory, redis_server: RedisServer, with_redis: bool
) -> None:
    node = hub_node(
        "a",
        redis_server.url if with_redis else None,
        broadcast_rate=0,
        tenant_publish_bytes=100_000,
        tenant_publish_burst=200_000,
        tenant_history_rooms=3,
    )
    operator, other = token("operator", "o"), token("operator", "o", tenant="globex")
    big = {"event": "x.n", "data": {"pad": "p" * 60_000}}
    answers = [node.broadcast(operator, room="r1", **big) for _ in range(6)]
    statuses = [answer.status_code for answer in answers]
    assert statuses[:3] == [202, 202, 202], statuses
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limited"
    assert "bytes/s" in refused.json()["error"]["message"]
    assert int(refused.headers["Retry-After"]) >= 1
    assert node.broadcast(other, room="r1", **big).status_code == 202  # another tenant
    small = {"event": "x.n", "data": {}}
    # globex keeps history in r1 already: two more rooms make its three.
    statuses = [node.broadcast(other, room=f"room{n}", **small).status_code for n in range(3)]
    assert statuses == [202, 202, 429]
    rooms = node.broadcast(other, room="room9", **small)
    assert "rooms already" in rooms.json()["error"]["message"]
    assert node.broadcast(other, room="room1", **small).status_code == 202  # one it has
    history = node.get("/v1/rooms/room9/history", other).json()
    assert history["events"] == []
    metrics = node.get("/metrics").text
    assert 'hub_tenant_limited_total{bound="publish_bytes"}' in metrics
    assert 'hub_tenant_limited_total{bound="history_rooms"} 2.0' in metrics


async def test_reading_rooms_creates_nothing_in_redis(
    hub_node: NodeFactory, redis_server: RedisServer
) -> None:
    """History reads and subscribes with `since` of free-named rooms leave no key behind,
    and a room first seen empty keeps its epoch through its first publish."""
    node = hub_node("a", redis_server.url)
    operator, dashboard = token("operator", "o"), token("dashboard", "d")
    assert node.broadcast(operator, room="seed", event="x.n", data={}).status_code == 202
    keys_before = int(redis_server.command("DBSIZE"))
    for n in range(50):
        assert node.get(f"/v1/rooms/free{n}/history", operator).status_code == 200
    client = await Client.connect(node, dashboard)
    for n in range(50):
        ack = await client.subscribe(f"location:free{n}", since="1-0", epoch="e")
        assert ack["recovered"] is False
    empty = await client.subscribe("location:later")
    await client.close()

    def keys_back() -> bool:
        return int(redis_server.command("DBSIZE")) == keys_before

    await eventually(keys_back, 10, "the socket's presence to be gone")
    answer = node.broadcast(operator, room="location:later", event="x.n", data={})
    assert answer.status_code == 202
    history = node.get("/v1/rooms/location:later/history", operator).json()
    assert history["epoch"] == empty["epoch"]


async def test_reading_rooms_holds_nothing_in_a_single_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The in-process broker keeps history only for rooms published to, and forgets a room
    once all its events have aged out, read or not."""
    broker = MemoryBroker()
    await broker.connect(lambda key, payload: None, lambda keys: None)
    brief = Retention(10, 1.0)
    for n in range(50):
        page = await broker.history(RoomKey("acme", f"free{n}"), "1-0", 10, brief)
        assert (page.events, page.last) == ([], None)
    assert broker._rooms == {}
    published = RoomKey("acme", "kept")
    broker.publish_now([Outgoing.of(published, b'{"type":"event"}', brief)])
    assert list(broker._rooms) == [published]
    later = time.time() + memory.SWEEP_INTERVAL + 1
    monkeypatch.setattr(time, "time", lambda: later)
    broker.publish_now([Outgoing.of(RoomKey("acme", "other"), b'{"type":"event"}', brief)])
    assert list(broker._rooms) == [RoomKey("acme", "other")]


async def test_a_message_on_a_room_channel_that_is_no_event_is_dropped(
    module_redis: RedisServer, shared_redis: HubNode
) -> None:
    """Whatever else writes to a Redis the hub shares: an empty message, or one holding no
    event, on a room's channel reaches no socket and stops nothing."""
    node, tenant = shared_redis, "hostile-junk"
    listener = await Client.connect(node, token("dashboard", "d1", tenant))
    await listener.subscribe("location:lobby")
    for junk in ("", "00-not-an-event"):
        module_redis.command("PUBLISH", f"hub:room:{{{tenant}}}:location:lobby", junk)
    sent = node.broadcast(
        token("operator", "o1", tenant),
        room="location:lobby",
        event="alert",
        data={"level": "info", "message": "m"},
    )
    assert sent.status_code == 202
    event = await listener.next_event()
    assert (event["event"], event["id"]) == ("alert", sent.json()["ids"]["location:lobby"])
    await listener.no_event()
    assert node.ready()
    await listener.close()
