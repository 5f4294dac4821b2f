"""The event-stream transport from outside: `GET /v1/stream` and `POST /v1/stream/{s}`
on real nodes, read as Server-Sent Events by a plain HTTP client, and attacked over raw
sockets."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosedError

from hub.auth import Role
from hub.stream_client import StreamConnection, StreamRefused, stream_url
from tests.support import HubNode, eventually, metric, token


class Stream:
    """One event stream, its SSE messages parsed as they come: `(event, data)`."""

    def __init__(self, node: HubNode, bearer: str) -> None:
        self.node = node
        self.bearer = bearer
        self.messages: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.comments = 0
        self.welcome: dict[str, Any] = {}

    async def read(self, response: httpx.Response) -> None:
        event, data = "message", []
        async for line in response.aiter_lines():
            if line.startswith(":"):
                self.comments += 1
            elif line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line == "" and data:
                await self.messages.put((event, orjson.loads("\n".join(data))))
                event, data = "message", []

    async def next(self, timeout: float = 10.0) -> tuple[str, Any]:
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def frame(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next frame of `kind`, skipping others."""
        while True:
            event, data = await self.next(timeout)
            if event == "message" and data.get("type") == kind:
                return dict(data)

    async def closed(self, timeout: float = 10.0) -> dict[str, Any]:
        """The `close` event, skipping frames before it."""
        while True:
            event, data = await self.next(timeout)
            if event == "close":
                return dict(data)

    async def post(self, frames: Any, bearer: str | None = None) -> httpx.Response:
        session = self.welcome["stream"]["session"]
        async with httpx.AsyncClient() as http:
            return await http.post(
                f"{self.node.url}/v1/stream/{session}",
                content=orjson.dumps(frames),
                headers={"Authorization": f"Bearer {bearer or self.bearer}"},
            )


@contextlib.asynccontextmanager
async def streaming(node: HubNode, bearer: str) -> AsyncIterator[Stream]:
    stream = Stream(node, bearer)
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as http,
        http.stream("GET", f"{node.url}/v1/stream", params={"token": bearer}) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        reading = asyncio.create_task(stream.read(response))
        try:
            stream.welcome = await stream.frame("welcome")
            yield stream
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await reading


async def test_a_stream_is_a_session_its_posted_frames_answered_in_order(
    shared_single: HubNode, tenant: str
) -> None:
    device = token(Role.DEVICE, "d1", tenant)
    async with streaming(shared_single, device) as stream:
        welcome = stream.welcome
        assert welcome["role"] == "device"
        assert "device:d1" in welcome["rooms"]
        session = welcome["stream"]["session"]
        assert welcome["stream"]["post"] == f"/v1/stream/{session}"
        assert len(session) >= 22  # 128 random bits, base64url
        answer = await stream.post([{"op": "ping", "ref": n} for n in range(5)])
        assert answer.status_code == 202
        assert (await stream.post({"op": "ping", "ref": 5})).status_code == 202
        refs = [(await stream.frame("pong"))["ref"] for _ in range(6)]
        assert refs == list(range(6))

        operator = token(Role.OPERATOR, "op", tenant)
        sent = shared_single.broadcast(operator, rooms=["device:d1"], event="x.note", data={"n": 1})
        assert sent.status_code == 202, sent.text
        event = await stream.frame("event")
        assert event["room"] == "device:d1"
        assert event["data"] == {"n": 1}


async def test_a_post_must_come_from_the_sessions_subject_and_tenant(
    shared_single: HubNode, tenant: str
) -> None:
    async with streaming(shared_single, token(Role.DEVICE, "d1", tenant)) as stream:
        other_device = token(Role.DEVICE, "d2", tenant)
        assert (await stream.post({"op": "ping"}, other_device)).status_code == 403
        other_tenant = token(Role.DEVICE, "d1", tenant + "x")
        answer = await stream.post({"op": "ping"}, other_tenant)
        assert answer.status_code == 403
        assert answer.json()["error"]["code"] == "forbidden"
        async with httpx.AsyncClient() as http:
            unsigned = await http.post(
                f"{shared_single.url}/v1/stream/{stream.welcome['stream']['session']}",
                content=b'{"op":"ping"}',
            )
        assert unsigned.status_code == 401
        assert unsigned.headers["access-control-allow-origin"] == "*"
    session = stream.welcome["stream"]["session"]
    await eventually(
        lambda: _post_status(shared_single, session, stream.bearer) == 404, 10, "the session gone"
    )


def _post_status(node: HubNode, session: str, bearer: str) -> int:
    return node.post(f"/v1/stream/{session}", {"op": "ping"}, bearer).status_code


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{", 400),
        (b"42", 400),
        (orjson.dumps([{"op": "ping"}] * 101), 413),
        (b"[" + b'"' + b"x" * 70_000 + b'"]', 413),
    ],
    ids=["not-json", "not-a-frame", "too-many-frames", "too-large"],
)
async def test_a_broken_post_is_refused_and_the_session_goes_on(
    shared_single: HubNode, tenant: str, body: bytes, status: int
) -> None:
    async with streaming(shared_single, token(Role.DEVICE, "d1", tenant)) as stream:
        session = stream.welcome["stream"]["session"]
        answer = _raw_post(shared_single, session, stream.bearer, body)
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
        assert (await stream.post({"op": "ping", "ref": "after"})).status_code == 202
        assert (await stream.frame("pong"))["ref"] == "after"


def _raw_post(node: HubNode, session: str, bearer: str, body: bytes) -> bytes:
    """A POST as an attacker sends it, over a plain socket; the whole answer."""
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as raw:
        raw.sendall(
            f"POST /v1/stream/{session} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {bearer}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := raw.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("query", "status"),
    [("", 401), ("?token=nonsense", 401)],
    ids=["no-token", "bad-token"],
)
def test_a_stream_is_refused_as_a_handshake_is(refusing: HubNode, query: str, status: int) -> None:
    answer = refusing.get("/v1/stream" + query)
    assert answer.status_code == status
    assert answer.json()["error"]["code"] == "unauthorized"


async def test_a_stream_that_is_not_read_is_shed(tenant: str, hub_node: Any) -> None:
    node = hub_node("shed", send_queue_bytes=65536)
    device = token(Role.DEVICE, "d1", tenant)
    operator = token(Role.OPERATOR, "op", tenant)
    raw = socket.create_connection(("127.0.0.1", node.port))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.sendall(f"GET /v1/stream?token={device} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await eventually(lambda: _streams(node) == 1, 10, "the stream open")
    shed = metric(node, "hub_slow_consumers_total")
    payload = {"blob": "x" * 60_000}
    for _ in range(400):  # past what the kernel's buffers take on loopback
        sent = node.broadcast(operator, rooms=["device:d1"], event="x.blob", data=payload)
        assert sent.status_code == 202, sent.text
        if metric(node, "hub_slow_consumers_total") > shed:
            break
    await eventually(lambda: metric(node, "hub_slow_consumers_total") > shed, 10, "the stream shed")
    await eventually(lambda: _streams(node) == 0, 10, "the stream gone")
    raw.close()


def _streams(node: HubNode) -> float:
    return metric(node, 'hub_transport_connections{transport="stream"}')


async def test_streams_are_counted_apart_from_sockets(shared_single: HubNode, tenant: str) -> None:
    before = _streams(shared_single)
    async with streaming(shared_single, token(Role.DEVICE, "d1", tenant)):
        assert _streams(shared_single) == before + 1
        admin = token(Role.ADMIN, "root", None)
        stats = shared_single.get("/v1/stats", admin).json()
        assert stats["node"]["transports"]["stream"] >= 1
        assert stats["node"]["transports"]["websocket"] == 0

        def posted() -> bool:  # the cluster's figures are the ones nodes post every few seconds
            cluster = shared_single.get("/v1/stats", admin).json()["cluster"]
            return bool(cluster["transports"]["stream"] >= 1)

        await eventually(posted, 15, "the cluster's figures counting the stream")
        operator = shared_single.get("/v1/stats", token(Role.OPERATOR, "op", tenant)).json()
        assert operator["node"]["transports"] == {"websocket": 0, "stream": 1}
    await eventually(lambda: _streams(shared_single) == before, 10, "the stream gone")


async def test_a_silent_stream_gets_comments_and_a_silent_device_is_reaped(
    hub_node: Any, tenant: str
) -> None:
    node = hub_node("quick", heartbeat_interval=0.5, heartbeat_timeout=1.5)
    async with streaming(node, token(Role.DEVICE, "d1", tenant)) as stream:
        assert (await stream.closed()) == {"code": 4008, "reason": "heartbeat timeout"}
        assert stream.comments >= 1


async def test_a_drain_ends_a_stream_with_1012(hub_node: Any, tenant: str) -> None:
    node = hub_node("draining")
    async with streaming(node, token(Role.DEVICE, "d1", tenant)) as stream:
        node.signal(signal.SIGTERM)
        assert (await stream.closed())["code"] == 1012


async def test_the_clients_stream_connection_reads_and_writes_like_a_socket(
    shared_single: HubNode, tenant: str
) -> None:
    url = stream_url(shared_single.ws_url)
    assert url == f"{shared_single.url}/v1/stream"
    device = token(Role.DEVICE, "d1", tenant)
    connection = await StreamConnection.open(url, device, lambda: device, 10)
    welcome = orjson.loads(await connection.recv())
    assert welcome["type"] == "welcome"
    await asyncio.gather(*(connection.send(f'{{"op":"ping","ref":{n}}}') for n in range(150)))
    pongs = [orjson.loads(await connection.recv()) for _ in range(150)]
    assert [pong["ref"] for pong in pongs] == list(range(150))
    await connection.close()
    with pytest.raises(ConnectionClosedError):
        await connection.recv()


async def test_the_clients_stream_connection_ends_with_the_hubs_close(
    hub_node: Any, tenant: str
) -> None:
    node = hub_node("closing")
    device = token(Role.DEVICE, "d1", tenant)
    connection = await StreamConnection.open(stream_url(node.ws_url), device, lambda: device, 10)
    await connection.recv()
    node.signal(signal.SIGTERM)
    with pytest.raises(ConnectionClosedError):
        async for _ in connection:
            pass
    assert (connection.close_code, connection.close_reason) == (1012, "node draining")
    await connection.close()


async def test_the_clients_stream_connection_says_why_it_is_refused(refusing: HubNode) -> None:
    with pytest.raises(StreamRefused) as refused:
        await StreamConnection.open(stream_url(refusing.ws_url), "bad", lambda: "bad", 10)
    assert refused.value.status == 401
    assert b"unauthorized" in refused.value.body


async def test_any_node_takes_a_post_for_the_node_holding_the_stream(
    tenant_pair: tuple[HubNode, HubNode], tenant: str
) -> None:
    holder, other = tenant_pair
    device = token(Role.DEVICE, "d1", tenant)
    async with streaming(holder, device) as stream:
        session = stream.welcome["stream"]["session"]
        for n in range(3):
            sent = other.post(f"/v1/stream/{session}", [{"op": "ping", "ref": n}], device)
            assert sent.status_code == 202, sent.text
        assert [(await stream.frame("pong"))["ref"] for _ in range(3)] == [0, 1, 2]
        stranger = token(Role.DEVICE, "d2", tenant)
        assert other.post(f"/v1/stream/{session}", {"op": "ping"}, stranger).status_code == 403
        assert other.post("/v1/stream/" + "A" * 22, {"op": "ping"}, device).status_code == 404
    await eventually(
        lambda: other.post(f"/v1/stream/{session}", {"op": "ping"}, device).status_code == 404,
        10,
        "the ended session unknown to the other node",
    )


async def test_a_post_for_a_killed_nodes_stream_is_not_found(
    pair: tuple[HubNode, HubNode], tenant: str
) -> None:
    holder, other = pair
    device = token(Role.DEVICE, "d1", tenant)
    async with streaming(holder, device) as stream:
        session = stream.welcome["stream"]["session"]
        holder.stop(signal.SIGKILL)
        answer = other.post(f"/v1/stream/{session}", {"op": "ping"}, device)
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "not_found"


async def test_posted_frames_count_against_the_frame_rate_as_a_sockets_do(
    hub_node: Any, tenant: str
) -> None:
    node = hub_node("paced", client_rate=5, client_burst=5)
    async with streaming(node, token(Role.DEVICE, "d1", tenant)) as stream:
        answer = await stream.post([{"op": "ping", "ref": n} for n in range(100)])
        assert answer.status_code == 202
        refused = await stream.frame("error")
        assert refused["code"] == "rate_limited"
        assert (await stream.closed())["code"] == 4029


def test_posts_to_sessions_nobody_here_holds_are_held_to_the_read_rate(
    hub_node: Any, tenant: str
) -> None:
    """Each such POST costs the cluster a lookup (and a message when a node holds the id):
    a token guessing ids, sent as an attacker sends them, is stopped at its read rate."""
    node = hub_node("guessed", read_rate=5)
    device = token(Role.DEVICE, "d1", tenant)
    answers = [
        _raw_post(node, f"{n:022d}", device, b'{"op":"ping"}').split(b"\r\n", 1)[0]
        for n in range(12)
    ]
    assert answers[0] == b"HTTP/1.1 404 Not Found"
    assert b"HTTP/1.1 429 Too Many Requests" in answers


async def test_a_stream_on_a_full_node_is_refused_503_as_a_handshake_is(
    hub_node: Any, tenant: str
) -> None:
    node = hub_node("full", max_connections=1)
    async with streaming(node, token(Role.DEVICE, "d1", tenant)):
        answer = node.get("/v1/stream", token(Role.DEVICE, "d2", tenant))
        assert answer.status_code == 503
        assert answer.json()["error"] == {"code": "unavailable", "message": "the node is full"}
        assert _streams(node) == 1
