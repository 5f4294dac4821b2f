"""Real parts for tests: a redis-server, `hub serve` processes, WebSocket clients, tokens."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
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
from loadtest.processes import HTTP as HTTP
from loadtest.processes import NO_PERSISTENCE, node_env, redis_answers
from loadtest.processes import cluster_port as cluster_port
from loadtest.processes import free_port as free_port
from loadtest.processes import wait_until as wait_until

SECRET = "test-secret-that-is-long-enough-for-hs256"
START_TIMEOUT = 20.0
LOST_PORT = "address already in use"
"""What `hub serve` says when something else listens on its port."""
READY_POLL = 0.01
"""Seconds between asks of a starting node: an ask it refuses costs this process 0.4 ms of
CPU, and `wait_until`'s 50 ms lost 25 ms of every start on average."""


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


def raw_upgrade(
    port: int, bearer: str, *, receive_buffer: int | None = None, timeout: float | None = None
) -> socket.socket:
    """A WebSocket handshake on a plain socket, as an attacker or a vanished peer sends it;
    `receive_buffer` set before connecting (a peer that reads little)."""
    raw = socket.socket()
    if receive_buffer is not None:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    raw.connect(("127.0.0.1", port))
    raw.sendall(
        f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {bearer}\r\n\r\n".encode()
    )
    raw.settimeout(timeout)
    return raw


def unmeasured_env(**extra: str) -> dict[str, str]:
    """This environment without the variables that start coverage in Python subprocesses:
    for tools that run no hub code (linters, validators, a load generator), which measuring
    would only slow down."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("COVERAGE_")}
    env.update(extra)
    return env


def quick_bench(where: Path, arguments: list[str]) -> dict[str, Any]:
    """The results of `python -m loadtest.bench --quick` with `arguments`, its files written
    in `where` (`bench.json`, `bench.png`)."""
    out = where / "bench.json"
    command = [sys.executable, "-m", "loadtest.bench", "--quick", *arguments]
    command += ["--out", str(out), "--chart", str(where / "bench.png")]
    root = Path(__file__).resolve().parent.parent
    subprocess.run(command, cwd=root, check=True, timeout=300, capture_output=True)
    results: dict[str, Any] = orjson.loads(out.read_text())
    return results


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


class _Process(_Daemon):
    """One redis-server (or Sentinel) on a free loopback port, keeping nothing on disk."""

    persistence: tuple[str, ...] = NO_PERSISTENCE
    """What a redis-server writes to disk: nothing, unless a subclass says otherwise."""

    def __init__(self, port: int | None = None) -> None:
        self.port = free_port() if port is None else port

    def launch(self, binary: str, *args: str, sentinel: bool = False) -> None:
        """Start the server with `args`; a Sentinel takes its config file alone."""
        options = ["--port", str(self.port), "--bind", "127.0.0.1"]
        if not sentinel:
            options += self.persistence
        self.process = subprocess.Popen(
            [binary, *args, *options] if not sentinel else [binary, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        what = f"redis on {self.port} to answer"
        wait_until(lambda: redis_answers(self.port), START_TIMEOUT, what)

    def command(self, *args: str) -> str:
        result = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, check=True
        )
        return result.stdout


class RedisServer(_Process):
    """A redis-server of the test's own on a free loopback port; can be stopped and restarted."""

    def __init__(self) -> None:
        super().__init__()
        self.binary = required("redis-server")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.settings: dict[str, str] = {}
        """What a node needs besides `url` to use it: nothing."""

    def start(self) -> None:
        self.launch(self.binary)


class AppendOnlyRedis(RedisServer):
    """A redis-server as the deployments run it: an append-only file fsynced every second,
    here in `directory`. Killed and started again, it has on the same port what it wrote."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        self.persistence = ("--dir", str(directory), "--save", "")
        self.persistence += ("--appendonly", "yes", "--appendfsync", "everysec")


class RedisCluster:
    """A Redis Cluster of the test's own: three masters and a replica each, on free
    loopback ports, made by `redis-cli --cluster create`, with a short node timeout so a
    failover takes about a second."""

    MASTERS = 3
    NODE_TIMEOUT_MS = 1000

    def __init__(self) -> None:
        self.binary = required("redis-server")
        self.servers = [_Process(cluster_port()) for _ in range(self.MASTERS * 2)]
        self._dir = Path(tempfile.mkdtemp(prefix="hub-cluster-"))
        self.url = ",".join(f"redis://127.0.0.1:{server.port}/0" for server in self.servers)
        self.settings = {"redis_cluster": "true"}
        """What a node needs besides `url` to use it."""

    def start(self) -> None:
        for server in self.servers:
            server.launch(
                self.binary,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self._dir / f"nodes-{server.port}.conf"),
                "--cluster-node-timeout",
                str(self.NODE_TIMEOUT_MS),
                "--dir",
                str(self._dir),
                "--repl-diskless-sync-delay",
                "0",
                "--cluster-replica-validity-factor",
                "0",
            )
        addresses = [f"127.0.0.1:{server.port}" for server in self.servers]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "1"],
            input="yes\n",
            capture_output=True,
            text=True,
            check=True,
        )
        wait_until(self.healthy, START_TIMEOUT, "the cluster to be ok")

    def healthy(self) -> bool:
        """Every server says the cluster is ok, and three masters hold all slots."""
        for server in self.live():
            if "cluster_state:ok" not in server.command("CLUSTER", "INFO"):
                return False
        masters = self.masters()
        synced = all("state=online" in m.command("INFO", "replication") for m in masters)
        return len(masters) == self.MASTERS and (synced or len(self.live()) == self.MASTERS)

    def live(self) -> list[_Process]:
        return [server for server in self.servers if server.process is not None]

    def masters(self) -> list[_Process]:
        return [
            server
            for server in self.live()
            if "role:master" in server.command("INFO", "replication")
        ]

    def master_of(self, tenant: str) -> _Process:
        """The master that holds `tenant`'s slot now."""
        first = self.live()[0]
        slot = int(first.command("CLUSTER", "KEYSLOT", f"{{{tenant}}}"))
        for server in self.masters():
            mine = next(
                line for line in server.command("CLUSTER", "NODES").splitlines() if "myself" in line
            )
            for span in mine.split()[8:]:
                low, _, high = span.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return server
        raise LookupError(f"no master holds slot {slot}")

    def move_slots(self, source: _Process, target: _Process) -> None:
        """Move every slot of `source` to `target` (`redis-cli --cluster reshard`)."""
        slots = sum(
            int(high or low) - int(low) + 1
            for line in source.command("CLUSTER", "NODES").splitlines()
            if "myself" in line
            for low, _, high in (span.partition("-") for span in line.split()[8:])
        )
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "reshard",
                f"127.0.0.1:{source.port}",
                "--cluster-from",
                source.command("CLUSTER", "MYID").strip(),
                "--cluster-to",
                target.command("CLUSTER", "MYID").strip(),
                "--cluster-slots",
                str(slots),
                "--cluster-yes",
            ],
            capture_output=True,
            check=True,
        )

    def flush(self) -> None:
        """Forget every key: a test that shares the cluster starts from nothing."""
        for server in self.masters():
            server.command("FLUSHALL")

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


class SentinelSet:
    """A master, its replica and three Sentinels watching them, of the test's own; the
    Sentinels fail over within about two seconds of the master going silent."""

    MASTER = "hubmaster"

    def __init__(self) -> None:
        self.binary = required("redis-server")
        self.master, self.replica = _Process(), _Process()
        self.sentinels = [_Process() for _ in range(3)]
        self._dir = Path(tempfile.mkdtemp(prefix="hub-sentinel-"))
        self.settings = {
            "redis_sentinels": ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels),
            "redis_sentinel_master": self.MASTER,
        }

    def start(self) -> None:
        where = ("--dir", str(self._dir))  # a replica writes the master's data it loads
        self.master.launch(self.binary, *where, "--repl-diskless-sync-delay", "0")
        self.replica.launch(self.binary, *where, "--replicaof", "127.0.0.1", str(self.master.port))
        for sentinel in self.sentinels:
            config = self._dir / f"sentinel-{sentinel.port}.conf"
            config.write_text(
                f"port {sentinel.port}\nbind 127.0.0.1\n"
                f"sentinel monitor {self.MASTER} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.MASTER} 1000\n"
                f"sentinel failover-timeout {self.MASTER} 5000\n"
            )
            sentinel.launch(self.binary, str(config), "--sentinel", sentinel=True)
        wait_until(self._watched, START_TIMEOUT, "the sentinels to see the replica")

    def _watched(self) -> bool:
        for sentinel in self.sentinels:
            replicas = sentinel.command("SENTINEL", "REPLICAS", self.MASTER)
            if str(self.replica.port) not in replicas:
                return False
        return True

    def current_master(self) -> _Process:
        answer = self.sentinels[0].command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.MASTER)
        port = int(answer.split()[1])
        return next(server for server in (self.master, self.replica) if server.port == port)

    def stop(self) -> None:
        for server in (*self.sentinels, self.replica, self.master):
            server.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


def _exited(process: subprocess.Popen[bytes], timeout: float) -> int:
    """`process.wait(timeout)`, woken by the exit itself: Python's own wait (before 3.14)
    sleeps between looks, up to 50 ms apart, which was half of a node's stop under coverage."""
    if process.poll() is None:  # not reaped yet, so its pid is still its own
        deadline = time.monotonic() + timeout
        with contextlib.suppress(AttributeError, OSError):  # no pidfd here: wait as Python does
            descriptor = os.pidfd_open(process.pid)
            try:
                select.select([descriptor], [], [], timeout)
            finally:
                os.close(descriptor)
        timeout = max(0.0, deadline - time.monotonic())
    return process.wait(timeout)


class HubNode:
    """One `hub serve` process on a free port."""

    def __init__(
        self,
        name: str,
        redis_url: str | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        **settings: Any,
    ) -> None:
        """`settings` become `HUB_<NAME>` variables; `environ` holds any others. The
        process's output goes to a file in `log_dir` (the system's temporary folder by
        default)."""
        self.name = name
        self._listen_on(free_port())
        fixed = {
            "HUB_LOG_LEVEL": "info",
            # Every test client comes from one address, and tests poll with few tokens: the
            # handshake and read limits are off unless a test sets them.
            "HUB_CONNECT_RATE": "0",
            "HUB_READ_RATE": "0",
            # A node stopped at the end of a test closes its sockets at once, not spread
            # over the default 10 s, and stops listening at once, not after the default 5 s
            # unready; drain tests set their own.
            "HUB_DRAIN_SECONDS": "0",
            "HUB_UNREADY_SECONDS": "0",
        }
        env = node_env(name, SECRET, redis_url, fixed, settings)
        env.update(environ or {})
        self.env = env
        self.log = Path(tempfile.mkstemp(prefix=f"hub-{name}-", suffix=".log", dir=log_dir)[1])
        self.process: subprocess.Popen[bytes] | None = None
        self.preexec: Callable[[], None] | None = None
        """Run in the child before `hub serve` starts (a resource limit, say)."""

    def start(self, ready: bool = True) -> None:
        """Start the node and wait until it answers as itself. `free_port` is a guess that
        another process may take before the node listens: a first start that lost its port
        that way moves to another; a restart keeps its port, which clients know."""
        first = not self.log.stat().st_size
        try:
            self._start(ready)
        except RuntimeError:
            if not (first and LOST_PORT in self.output()):
                raise
            self._listen_on(free_port())
            self._start(ready)

    def _listen_on(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/v1/ws"

    def _start(self, ready: bool) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hub", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=self.preexec,
            )
        path = "/readyz" if ready else "/healthz"
        what = f"{self.name}{path}"
        wait_until(lambda: self._status(path) == 200, START_TIMEOUT, what, READY_POLL)

    def _status(self, path: str) -> int | None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.output()}")
        try:
            answer = HTTP.get(self.url + path, timeout=1.0)
            if answer.json().get("node") != self.env["HUB_NODE_ID"]:
                return None  # another process on the port, not this node
            return answer.status_code
        except (httpx.HTTPError, ValueError, AttributeError):
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
        self.begin_stop(sig)
        self.wait_stopped()

    def begin_stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            self.signal(sig)

    def stopped(self) -> bool:
        """Whether the process has ended (and is reaped)."""
        if self.process is not None and self.process.poll() is not None:
            self.process = None
        return self.process is None

    def wait_stopped(self) -> None:
        """Wait for a signalled process to end; kill it past 15 s."""
        if self.process is None:
            return
        try:
            _exited(self.process, 15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def post(self, path: str, body: Any, bearer: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        return HTTP.post(self.url + path, json=body, headers=headers, timeout=10.0)

    def broadcast(self, bearer: str, **body: Any) -> httpx.Response:
        return self.post("/v1/broadcast", body, bearer)

    def get(self, path: str, bearer: str | None = None, **params: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        return HTTP.get(self.url + path, params=params, headers=headers, timeout=10.0)

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
    url: str,
    room: str,
    count: int,
    published: list[str],
    pause: float = 0.02,
    tenant: str = "acme",
) -> None:
    """Broadcast `count` numbered events to `room` of `tenant` through `url`; keep trying
    through refusals and outages; record each accepted event's id."""
    bearer = token("operator", "publisher", tenant)
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


def metric(node: HubNode, sample: str) -> float:
    """The value of one sample of the node's `/metrics` (`name{labels}` as it is written),
    0 when it is not there yet."""
    for line in node.get("/metrics").text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


def raw_broadcast(
    node: HubNode, body: bytes, key: str | bytes | None = None, bearer: str | None = None
) -> httpx.Response:
    """`POST /v1/broadcast` of `body` as sent, bytes for bytes, with an `Idempotency-Key`
    (any bytes) and a token when given."""
    headers = [(b"Content-Type", b"application/json")]
    if bearer is not None:
        headers.append((b"Authorization", f"Bearer {bearer}".encode()))
    if key is not None:
        headers.append((b"Idempotency-Key", key if isinstance(key, bytes) else key.encode()))
    return httpx.post(f"{node.url}/v1/broadcast", content=body, headers=headers, timeout=10)


def history_ids(node: HubNode, room: str) -> list[str]:
    answer = node.get(f"/v1/rooms/{room}/history", token("operator", "reader"), limit="1000")
    assert answer.status_code == 200, answer.text
    return [event["id"] for event in answer.json()["events"]]


class ShippedProxy(_Daemon):
    """HAProxy run with a config from deploy/ that a subclass writes, made for loopback,
    into `config`; its output (the requests it logs included) goes to `log`."""

    def __init__(self, directory: Path, scheme: str, config_name: str) -> None:
        self.binary = required("haproxy")
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        socket_scheme = "wss" if scheme == "https" else "ws"
        self.ws_url = f"{socket_scheme}://127.0.0.1:{self.port}/v1/ws"
        self.config = directory / config_name
        self.log = directory / "haproxy.log"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [self.binary, "-db", "-f", str(self.config)], stdout=out, stderr=out
            )
        wait_until(self._answers, START_TIMEOUT, f"haproxy to answer on {self.url}")

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"haproxy exited: {self.log.read_text(errors='replace')}")
        try:
            return self.healthy()
        except httpx.HTTPError:
            return False

    def healthy(self) -> bool:
        return httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200


class _HAProxyProcess(_Daemon):
    """HAProxy from its `config`, quiet, started once it answers (`_answers`)."""

    binary: str
    config: Path

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-db", "-f", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, START_TIMEOUT, f"haproxy {self.config.name} to answer")

    def _answers(self) -> bool:
        raise NotImplementedError


class HAProxy(_HAProxyProcess):
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

    def _answers(self) -> bool:
        try:
            return HTTP.get(self.url + "/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False


class UpgradeRefusingProxy(_HAProxyProcess):
    """HAProxy as the forward proxy of a hotel's or a shop's network, with the balancer of
    the nodes behind it: plain HTTP (absolute-form requests) goes to the healthy nodes in
    turn, never the same twice in a row, and `CONNECT` or any request asking for an
    upgrade is refused, as proxies that break WebSockets do. Clients use it as their HTTP
    proxy (`http://127.0.0.1:<port>`), or as the nodes' address (origin-form requests go
    the same way). With `refusing` False, on the `port` of one that was, it is the same
    network once its proxy lets WebSockets through."""

    def __init__(self, nodes: list[HubNode], *, refusing: bool = True, port: int = 0) -> None:
        self.binary = required("haproxy")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/v1/ws"
        denials = (
            "    http-request deny deny_status 403 if METH_CONNECT\n"
            "    http-request deny deny_status 403 if { req.hdr(upgrade) -m found }\n"
            if refusing
            else ""
        )
        self._health = f"{nodes[0].url}/healthz"
        servers = "\n".join(f"    server {node.name} 127.0.0.1:{node.port}" for node in nodes)
        self.config = Path(tempfile.mkstemp(prefix="proxy-", suffix=".cfg")[1])
        self.config.write_text(
            f"""global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 1h
    timeout server 1h

frontend proxy
    bind 127.0.0.1:{self.port}
{denials}    default_backend nodes

backend nodes
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 200ms fall 1 rise 2
{servers}
"""
        )

    def _answers(self) -> bool:
        try:
            with httpx.Client(proxy=self.url) as through:
                return through.get(self._health).status_code == 200
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
    async def watching_status(cls, node: HubNode, tenant: str = "acme") -> Client:
        """A dashboard on `node` subscribed to `tenant`'s lifecycle events."""
        client = await cls.connect(node, token("dashboard", "status-watcher", tenant))
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
    lines = metrics.render(None)[0].decode().splitlines()
    return {line.split()[2] for line in lines if line.startswith("# TYPE")}


class DeafProxy:
    """A TCP proxy in front of a redis-server, in a thread of its own, that can go deaf:
    while `silenced` it drops every pub/sub message Redis sends, and nothing else, so a
    subscriber connection stays up and answers pings but hears nothing (as one subscribed
    to nothing on the server's side)."""

    MESSAGES = (b"*3\r\n$7\r\nmessage\r\n", b"*3\r\n$8\r\nsmessage\r\n")

    def __init__(self, target: int) -> None:
        self._target = target
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.silenced = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(5)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _close(self) -> None:
        self._server.close()
        pumps = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)

    async def _serve(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        server, to_server = await asyncio.open_connection("127.0.0.1", self._target)
        await asyncio.gather(
            self._pump(client, to_server, lambda data: data),
            self._pump(server, to_client, self._filter()),
            return_exceptions=True,
        )
        to_client.close()
        to_server.close()

    @staticmethod
    async def _pump(
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        passed: Callable[[bytes], bytes],
    ) -> None:
        while data := await source.read(65536):
            sink.write(passed(data))
            await sink.drain()
        sink.close()

    def _filter(self) -> Callable[[bytes], bytes]:
        """What of Redis' replies goes through: whole values, messages left out while
        silenced."""
        buffer = bytearray()

        def passed(data: bytes) -> bytes:
            buffer.extend(data)
            out, at = bytearray(), 0
            while (end := _resp_end(buffer, at)) is not None:
                value = bytes(buffer[at:end])
                if not (self.silenced and value.startswith(self.MESSAGES)):
                    out += value
                at = end
            del buffer[:at]
            return bytes(out)

        return passed


def _resp_end(buffer: bytearray, at: int) -> int | None:
    """Where the RESP value at `at` ends, None while it is not all there."""
    line = buffer.find(b"\r\n", at)
    if line < 0:
        return None
    kind, size = bytes(buffer[at : at + 1]), buffer[at + 1 : line]
    if kind in (b"+", b"-", b":"):
        return line + 2
    count = int(size)
    if kind == b"$":
        end = line + 2 if count < 0 else line + 2 + count + 2
        return end if len(buffer) >= end else None
    position: int | None = line + 2
    for _ in range(max(count, 0)):
        assert position is not None
        position = _resp_end(buffer, position)
        if position is None:
            return None
    return position
