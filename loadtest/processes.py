"""The local processes a benchmark runs, and the test suite with it: hub nodes and Redis
servers of their own on free loopback ports, the wait until they answer, and what they
cost. Both start them the same way from here; nothing here knows the tests."""

from __future__ import annotations

import contextlib
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

SECRET = "bench-secret-that-is-long-enough-for-hs256"
NO_PERSISTENCE = ("--save", "", "--appendonly", "no")
"""redis-server options that keep nothing on disk."""
HTTP = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))
"""Plain HTTP requests to local nodes, polls above all: one client for all, since building
one costs a request about 35 ms of CPU (its TLS context) and nodes are polled thousands of
times. Without keep-alive, each request still has a connection of its own."""


def raise_file_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cluster_port() -> int:
    """A free port whose cluster bus port (10000 above) is free too, both below the
    ephemeral range (32768 and up), where a client's connection could take one meanwhile."""
    while True:
        port = random.randrange(10000, 22000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.05
) -> None:
    """Poll `condition` every `poll` seconds until it holds, blocking the thread (so for
    synchronous code only: a coroutine waiting this way stalls its event loop); past
    `timeout` seconds, `TimeoutError` naming `what`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(poll)


def node_env(
    name: str,
    secret: str,
    redis_url: str | None,
    fixed: Mapping[str, str],
    settings: Mapping[str, object],
) -> dict[str, str]:
    """The environment of a `hub serve` process: this one without its `HUB_` variables,
    then the token secret, the node's name, `fixed`, the Redis URL when there is one, and
    `settings` as `HUB_<NAME>` variables (which override `fixed`)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_")}
    env.update(HUB_JWT_SECRET=secret, HUB_NODE_ID=name)
    env.update(fixed)
    if redis_url:
        env["HUB_REDIS_URL"] = redis_url
    env.update({f"HUB_{key.upper()}": str(value) for key, value in settings.items()})
    return env


def start_node(
    name: str, port: int, redis_url: str | None, cpu: str | None, **settings: str
) -> Any:
    """Start `hub serve` (pinned with taskset when asked) and wait until it is ready."""
    process = launch_node(name, port, redis_url, cpu, **settings)
    wait_ready(name, port, process)
    return process


def launch_node(
    name: str, port: int, redis_url: str | None, cpu: str | None, **settings: str
) -> Any:
    """Start `hub serve` (pinned with taskset when asked), without waiting for it."""
    fixed = {
        "HUB_CLIENT_RATE": "0",
        "HUB_CONNECT_RATE": "0",
        "HUB_BROADCAST_RATE": "0",
        "HUB_READ_RATE": "0",
        "HUB_LOG_LEVEL": "warning",
        "HUB_UNREADY_SECONDS": "0",  # a benchmark's node stops at once when it is done
    }
    env = node_env(name, SECRET, redis_url, fixed, settings)
    command = [sys.executable, "-m", "hub", "serve", "--port", str(port)]
    if cpu is not None and shutil.which("taskset"):
        command = ["taskset", "-c", cpu, *command]
    return subprocess.Popen(command, env=env)


def wait_ready(name: str, port: int, process: Any, poll: float = 0.1) -> None:
    """Ask `/readyz` every `poll` seconds until it answers 200; kill the node past 20 s."""

    def ready() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return HTTP.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
        return False

    try:
        wait_until(ready, 20, f"node {name} to be ready", poll)
    except TimeoutError:
        process.kill()
        raise RuntimeError(f"node {name} did not become ready") from None


def redis_answers(port: int) -> bool:
    """Whether the Redis on loopback `port` answers a PING (it does not while it loads)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    """A Redis of the benchmark's own, without persistence, so its counters are ours alone."""
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", *NO_PERSISTENCE]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: redis_answers(port), 10, "redis-server to start")
    except TimeoutError:
        process.kill()
        raise RuntimeError("redis-server did not start") from None
    return process, f"redis://127.0.0.1:{port}/0"


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process `pid`, all its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident memory of process `pid`, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
