"""Real parts for tests: a redis-server, `hub serve` processes, WebSocket clients, tokens."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from hub.auth import Role, issue_token
from hub.backoff import Backoff
from hub.client import HubClient
from hub.metrics import Metrics
from hub.stats import Figures

SECRET = "test-secret-that-is-long-enough-for-hs256"
START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def required(binary: str, package: str | None = None) -> str:
    """The path of a program the tests run; missing, the test fails under CI (where it
    must be there) and is skipped elsewhere. Debian puts some in /usr/sbin, not on every
    user's PATH."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    found = shutil.which(binary, path=search)
    if found is None:
        message = (
            f"{binary} is not installed (apt-get install {package or binary}, "
            "or run scripts/install)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def unmeasured_env(**extra: str) -> dict[str, str]:
    """This environment without the variables that start coverage in Python subprocesses:
    for tools that run no hub code (linters, validators, a load generator), which measuring
    would only slow down."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("COVERAGE_")}
    env.update(extra)
    return env


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition`, blocking the thread: for synchronous code only (process start-up);
    inside a coroutine use `eventually`, which keeps the event loop running."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> None:
    """Poll `condition` until it holds, without stalling the event loop, so the test's own
    clients keep reading while it waits. A coroutine function is awaited on the loop; any
    other callable runs in a worker thread, since most conditions here make blocking HTTP
    requests. The deadline holds even when a check hangs."""
    try:
        async with asyncio.timeout(timeout) as within:
            while True:
                if await _holds(condition):
                    return
                await asyncio.sleep(interval)
    except TimeoutError:
        if within.expired():
            raise TimeoutError(f"timed out waiting for {what}") from None
        raise


async def _holds(condition: Callable[[], bool | Awaitable[bool]]) -> bool:
    if inspect.iscoroutinefunction(condition):
        return bool(await condition())
    result = await asyncio.to_thread(condition)
    if inspect.isawaitable(result):
        result = await result
    return bool(result)


def token(
    role: Role | str,
    sub: str,
    tenant: str | None = "acme",
    *,
    ttl: float = 3600,
    secret: str = SECRET,
    **claims: Any,
) -> str:
    return issue_token(secret, sub=sub, role=Role(role), tenant=tenant, ttl=ttl, extra=claims)


class _Daemon:
    """A server process a test starts, and kills when it is done with it."""

    process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


class RedisServer(_Daemon):
    """A redis-server of the test's own on a free loopback port; can be stopped and restarted."""

    def __init__(self) -> None:
        self.binary = required("redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, START_TIMEOUT, "redis-server to answer")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args: str) -> str:
        """Run one command through redis-cli, for looking at Redis from the outside."""
        result = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout


class HubNode:
    """One `hub serve` process on a free port."""

    def __init__(self, name: str, redis_url: str | None = None, **settings: Any) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/v1/ws"
        env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_")}
        # Every test client comes from one address, and tests poll with few tokens: the
        # handshake and read limits are off unless a test sets them.
        env.update(
            HUB_JWT_SECRET=SECRET,
            HUB_NODE_ID=name,
            HUB_LOG_LEVEL="info",
            HUB_CONNECT_RATE="0",
            HUB_READ_RATE="0",
            # A node stopped at the end of a test closes its sockets at once, not spread
            # over the default 10 s; drain tests set their own.
            HUB_DRAIN_SECONDS="0",
        )
        if redis_url is not None:
            env["HUB_REDIS_URL"] = redis_url
        env.update({f"HUB_{key.upper()}": str(value) for key, value in settings.items()})
        self.env = env
        self.log = Path(tempfile.mkstemp(prefix=f"hub-{name}-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready: bool = True) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hub", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        path = "/readyz" if ready else "/healthz"
        wait_until(lambda: self._status(path) == 200, START_TIMEOUT, f"{self.name}{path}")

    def _status(self, path: str) -> int | None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.output()}")
        try:
            return httpx.get(self.url + path, timeout=1.0).status_code
        except httpx.HTTPError:
            return None

    def ready(self) -> bool:
        return self._status("/readyz") == 200

    def exit_code(self, timeout: float = 30) -> int:
        """Wait for the process to end by itself; its exit status."""
        assert self.process is not None
        code = self.process.wait(timeout=timeout)
        self.process = None
        return code

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def post(self, path: str, body: Any, bearer: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        return httpx.post(self.url + path, json=body, headers=headers, timeout=10.0)

    def broadcast(self, bearer: str, **body: Any) -> httpx.Response:
        return self.post("/v1/broadcast", body, bearer)

    def get(self, path: str, bearer: str | None = None, **params: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        return httpx.get(self.url + path, params=params, headers=headers, timeout=10.0)

    def presence(self, room: str, bearer: str) -> list[dict[str, Any]]:
        """The members of `room`, as this node answers for the whole cluster."""
        answer = self.get(f"/v1/rooms/{room}/presence", bearer)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["room"] == room
        members: list[dict[str, Any]] = body["members"]
        return members

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def pause(self) -> None:
        """Freeze the process (SIGSTOP), as a node cut off from everything would be."""
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)


class Recorder:
    """A resuming `HubClient` that keeps the ids of the events it is handed, in order."""

    def __init__(self, urls: list[str], bearer: str, rooms: list[str]) -> None:
        self.ids: list[str] = []
        self.lost: list[str] = []
        self.client = HubClient(
            urls,
            bearer,
            rooms=rooms,
            on_event=lambda event: self.ids.append(event["id"]),
            on_lost=self.lost.append,
            backoff=Backoff(base=0.05, cap=0.5),
        )


class Crowd:
    """Recorders running together: started at once, then checked that each was handed
    exactly the given ids, in order, with nothing reported lost."""

    def __init__(self, recorders: list[Recorder]) -> None:
        self.recorders = recorders
        self._runs: list[asyncio.Task[None]] = []

    async def start(self, timeout: float = 30) -> None:
        self._runs = [asyncio.create_task(r.client.run()) for r in self.recorders]
        waiting = (r.client.connected.wait() for r in self.recorders)
        await asyncio.wait_for(asyncio.gather(*waiting), timeout)

    async def received_exactly(self, full: list[str], timeout: float = 30) -> None:
        async def caught_up() -> bool:  # the recorders' lists live on this loop
            return all(len(r.ids) >= len(full) for r in self.recorders)

        await eventually(caught_up, timeout, "every client to catch up")
        for recorder in self.recorders:
            assert recorder.ids == full
            assert recorder.lost == []

    async def stop(self) -> None:
        for recorder in self.recorders:
            await recorder.client.stop()
        for run in self._runs:
            await asyncio.wait_for(run, 10)


async def publish_numbered(
    url: str, room: str, count: int, published: list[str], pause: float = 0.02
) -> None:
    """Broadcast `count` numbered events to `room` through `url`; keep trying through
    refusals and outages; record each accepted event's id."""
    bearer = token("operator", "publisher")
    async with httpx.AsyncClient(base_url=url) as http:
        n = 0
        while n < count:
            body = {"room": room, "event": "x.tick", "data": {"n": n}}
            try:
                answer = await http.post(
                    "/v1/broadcast", json=body, headers={"Authorization": f"Bearer {bearer}"}
                )
            except httpx.HTTPError:
                await asyncio.sleep(0.05)
                continue
            if answer.status_code == 202:
                published.append(answer.json()["ids"][room])
                n += 1
            await asyncio.sleep(pause)


def history_ids(node: HubNode, room: str) -> list[str]:
    answer = node.get(f"/v1/rooms/{room}/history", token("operator", "reader"), limit="1000")
    assert answer.status_code == 200, answer.text
    return [event["id"] for event in answer.json()["events"]]


class HAProxy(_Daemon):
    """HAProxy (the Debian package) in front of some nodes: HTTP and WebSockets, with
    health checks on /readyz, as deploy/haproxy.cfg sets it up."""

    def __init__(self, nodes: list[HubNode]) -> None:
        self.binary = required("haproxy")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/v1/ws"
        servers = "\n".join(f"    server {node.name} 127.0.0.1:{node.port}" for node in nodes)
        self.config = Path(tempfile.mkstemp(prefix="haproxy-", suffix=".cfg")[1])
        self.config.write_text(
            f"""global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout check 1s
    retries 3
    option redispatch 1

frontend hub
    bind 127.0.0.1:{self.port}
    option forwardfor
    default_backend nodes

backend nodes
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 200ms fall 1 rise 2
{servers}
"""
        )

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-db", "-f", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, START_TIMEOUT, "haproxy to answer")

    def _answers(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False


class Client:
    """A WebSocket client that speaks the hub's JSON frames, with deadlines on every read."""

    def __init__(self, ws: ClientConnection, welcome: dict[str, Any]) -> None:
        self.ws = ws
        self.welcome = welcome
        self._refs = 0

    @classmethod
    async def connect(cls, node: HubNode, bearer: str, *, query: bool = False) -> Client:
        if query:
            ws = await connect(f"{node.ws_url}?token={bearer}", compression=None)
        else:
            headers = {"Authorization": f"Bearer {bearer}"}
            ws = await connect(node.ws_url, additional_headers=headers, compression=None)
        welcome = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert welcome["type"] == "welcome", welcome
        return cls(ws, welcome)

    @classmethod
    async def watching_status(cls, node: HubNode) -> Client:
        """A dashboard on `node` subscribed to its tenant's lifecycle events."""
        client = await cls.connect(node, token("dashboard", "status-watcher"))
        await client.subscribe("status")
        return client

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(frame).decode())

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        frame: dict[str, Any] = orjson.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        return frame

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one op and return its answer (ack, error or pong), skipping events."""
        self._refs += 1
        ref = self._refs
        await self.send({"op": op, "ref": ref, **fields})
        while True:
            frame = await self.recv()
            if frame.get("type") != "event" and frame.get("ref") == ref:
                return frame

    async def subscribe(self, room: str, **fields: Any) -> dict[str, Any]:
        answer = await self.request("subscribe", room=room, **fields)
        assert answer["type"] == "ack", answer
        return answer

    async def next_event(self, timeout: float = 5.0) -> dict[str, Any]:
        while True:
            frame = await self.recv(timeout)
            if frame.get("type") == "event":
                return frame

    async def no_event(self, within: float = 0.5) -> None:
        """Assert that nothing arrives for `within` seconds."""
        try:
            frame = await self.recv(within)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected frame {frame}")

    async def closed_with(self, timeout: float = 10.0) -> int | None:
        """Read until the server closes; return its close code."""
        async with asyncio.timeout(timeout):
            with contextlib.suppress(ConnectionClosed):
                async for _ in self.ws:
                    pass
            await self.ws.wait_closed()
        return self.ws.close_code

    async def events(
        self, enough: Callable[[list[dict[str, Any]]], bool], timeout: float
    ) -> list[dict[str, Any]]:
        """Collect events until `enough(events)` holds; fail after `timeout` seconds."""
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while not enough(seen):
                seen.append(await self.next_event(timeout))
        return seen

    async def drain(self, within: float) -> list[dict[str, Any]]:
        """Every event that arrives in the next `within` seconds."""
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            try:
                seen.append(await self.next_event(left))
            except TimeoutError:
                break
        return seen

    def cut(self) -> None:
        """Drop the connection without a closing handshake, as a network would."""
        self.ws.transport.abort()

    async def close(self) -> None:
        await self.ws.close()


def metric_names() -> set[str]:
    """Every metric a node exposes, by the name its `# TYPE` line gives."""
    metrics = Metrics()
    metrics.watch(
        lambda: Figures(
            node="n",
            connections={},
            rooms=0,
            messages={"in": 0, "out": 0, "dropped": 0},
            per_second={},
            dropped={},
            queue_bytes=0,
            queued_sockets=0,
            max_connections=1,
            draining=False,
            broker_up=True,
        )
    )
    lines = metrics.render().decode().splitlines()
    return {line.split()[2] for line in lines if line.startswith("# TYPE")}
