"""The processes a benchmark runs: hub nodes, a Redis of its own, and what they cost."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import redis

SECRET = "bench-secret-that-is-long-enough-for-hs256"
_POLL = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))
"""Polls nodes until they are ready: one client, since building one costs ~35 ms of CPU."""


def raise_file_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


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
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(
        HUB_JWT_SECRET=SECRET,
        HUB_NODE_ID=name,
        HUB_CLIENT_RATE="0",
        HUB_CONNECT_RATE="0",
        HUB_BROADCAST_RATE="0",
        HUB_READ_RATE="0",
        HUB_LOG_LEVEL="warning",
        HUB_UNREADY_SECONDS="0",  # a benchmark's node stops at once when it is done
    )
    if redis_url:
        env["HUB_REDIS_URL"] = redis_url
    env.update({f"HUB_{key.upper()}": value for key, value in settings.items()})
    command = [sys.executable, "-m", "hub", "serve", "--port", str(port)]
    if cpu is not None and shutil.which("taskset"):
        command = ["taskset", "-c", cpu, *command]
    return subprocess.Popen(command, env=env)


def wait_ready(name: str, port: int, process: Any, poll: float = 0.1) -> None:
    """Ask `/readyz` every `poll` seconds until it answers 200; kill the node past 20 s."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if _POLL.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        time.sleep(poll)
    process.kill()
    raise RuntimeError(f"node {name} did not become ready")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    """A Redis of the benchmark's own, without persistence, so its counters are ours alone."""
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    process = subprocess.Popen(
        [*command, "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    with redis.Redis.from_url(url) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    return process, url
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not start")


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
