"""The rig of the state and receipts benchmarks: the nodes of one setup, the client
processes that load them (driven over pipes), and the figures both report."""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import orjson

from loadtest.processes import cpu_seconds, free_port, start_node

PROCESSES = 3
"""Client processes at least: the load side's parsing is spread, as in loadtest.fanout."""
PER_PROCESS = 5000
"""Sockets one client process holds at most (each process has at most 20,000 open files)."""
SILENT = {"heartbeat_interval": "300", "heartbeat_timeout": "600"}
"""Node settings under which no device is closed for silence: these devices never beat."""
IDLE = 0.25
"""Share of a core under which the nodes count as idle: with nothing to do they only
answer pings and refresh their registration, far below this."""
QUIET = 0.5
"""Seconds the nodes must stay idle before the next step starts."""
SETTLE_LIMIT = 30.0
"""Seconds to wait for the nodes to go idle at most; past them the step starts anyway and
its CPU figure shows the rest."""


def connect_timeout(sockets: int) -> float:
    """Generous: handshakes run at ~1,700/s on one server core."""
    return 60 + sockets / 200


class Nodes:
    """The nodes of one setup: one node holding everything in its process, or `count`
    (two) through `redis_url`; started on entry, stopped with SIGINT on exit."""

    def __init__(
        self,
        name: str,
        redis_url: str | None,
        cpu: str | None,
        settings: dict[str, str] | None = None,
        count: int = 2,
    ) -> None:
        self.setup = "two nodes + Redis" if redis_url else "one node"
        self.ports = [free_port() for _ in range(count if redis_url else 1)]
        self._name, self._redis_url, self._cpu = name, redis_url, cpu
        self._settings = settings or {}
        self._servers: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Nodes:
        try:
            for i, port in enumerate(self.ports):
                self._servers.append(
                    start_node(
                        f"{self._name}-{i}", port, self._redis_url, self._cpu, **self._settings
                    )
                )
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        for server in self._servers:
            server.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=10)
            server.kill()

    def pids(self) -> list[int]:
        return [server.pid for server in self._servers]

    def cpu_seconds(self) -> float:
        """CPU time the nodes used so far, all of them together."""
        return sum(cpu_seconds(server.pid) for server in self._servers)

    def settle(self) -> None:
        """Wait until the nodes have been idle for `QUIET` seconds: what a step leaves them
        (closed sockets to report offline, presence to write) is not the next one's cost."""
        deadline = time.monotonic() + SETTLE_LIMIT
        at, cpu = time.monotonic(), self.cpu_seconds()
        quiet_since = at
        while at - quiet_since < QUIET and at < deadline:
            time.sleep(0.2)
            last, last_cpu = at, cpu
            at, cpu = time.monotonic(), self.cpu_seconds()
            if cpu - last_cpu > IDLE * (at - last):
                quiet_since = at


class Clients:
    """Client processes, each with its share of `devices`: `target(first, count, *args,
    pipe)` opens its sockets, sends "ready", then answers each message with one of its own."""

    def __init__(
        self, target: Callable[..., None], devices: int, *args: Any, timeout: float
    ) -> None:
        processes = min(devices, max(PROCESSES, -(-devices // PER_PROCESS)))
        per = -(-devices // processes)
        self.shares = [(first, min(per, devices - first)) for first in range(0, devices, per)]
        self._target, self._args, self._timeout = target, args, timeout
        self._processes: list[BaseProcess] = []
        self._pipes: list[Connection] = []

    def __enter__(self) -> Clients:
        context = mp.get_context("spawn")
        try:
            for first, count in self.shares:
                mine, theirs = context.Pipe()
                process = context.Process(
                    target=self._target, args=(first, count, *self._args, theirs), daemon=True
                )
                process.start()
                self._processes.append(process)
                self._pipes.append(mine)
            if any(answer != "ready" for answer in self._answers(self._timeout, "connect")):
                raise RuntimeError("a client process did not say it was ready")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        for process in self._processes:
            process.kill()

    def ask(self, message: Any, timeout: float) -> list[Any]:
        """Send `message` to every process; their answers, within `timeout` seconds each."""
        for pipe in self._pipes:
            pipe.send(message)
        return self._answers(timeout, "answer")

    def _answers(self, timeout: float, what: str) -> list[Any]:
        answers = []
        for pipe in self._pipes:
            if not pipe.poll(timeout):
                raise RuntimeError(f"a client process did not {what} in time")
            answers.append(pipe.recv())
        return answers


def latency(values_ms: list[float]) -> dict[str, float | None]:
    """p50, p99 and the largest of `values_ms`, in ms; None each when there are none."""
    ordered = sorted(values_ms)
    if not ordered:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "p50_ms": round(ordered[len(ordered) // 2], 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99)], 2),
        "max_ms": round(ordered[-1], 2),
    }


def per_cpu_second(count: int, cpu: float) -> int | None:
    """`count` per CPU-second of the nodes: a figure a slow load side does not distort."""
    return round(count / cpu) if cpu > 0 else None


def write_rows(rows: Iterable[dict[str, Any]], args: argparse.Namespace, out: str) -> None:
    """Print each row as it comes, then write them all with the arguments to `out`."""
    kept = []
    for row in rows:
        print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        kept.append(row)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(orjson.dumps({"args": vars(args), "steps": kept}).decode())
