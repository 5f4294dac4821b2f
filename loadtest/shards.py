"""Shards benchmark: publishes and deliveries per second through one Redis, and through a
Redis Cluster of three masters, side by side, with the CPU of the nodes and of each Redis.

Two nodes; `tenants` tenants, each with `devices` devices in its room `devices`, spread
over client processes that count frames; one publisher socket per tenant keeps a window
of publishes in flight for `seconds`. Redis' own counters give what each publish cost it:
commands (the script and the commands it runs) and read events (a pipeline arrives as one,
so these count round trips).

    python -m loadtest.shards --tenants 12 --devices 50 --seconds 5 --server-cpu 0
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import redis

from hub.auth import Role, issue_token
from loadtest.fanout import FrameCounter, publisher
from loadtest.processes import (
    SECRET,
    cluster_port,
    cpu_seconds,
    raise_file_limit,
    redis_answers,
    wait_until,
)
from loadtest.publish import keep_publishing, publish_frame
from loadtest.rig import SILENT, Clients, Nodes, connect_timeout, per_cpu_second, write_rows
from loadtest.wire import open_many

MASTERS = 3
WINDOW = 16
"""Publishes each tenant's publisher keeps in flight."""


def tenant_of(i: int) -> str:
    return f"t{i}"


def _devices(first: int, count: int, ports: list[int], tenants: int, pipe: Connection) -> None:
    """One client process: its devices (device i is of tenant i % tenants), then frame
    counts whenever asked."""
    raise_file_limit()
    shared: dict[str, Any] = {"frames": 0, "latencies": [], "sample": 10**9}

    def token_of(i: int) -> str:
        tenant = tenant_of(i % tenants)
        return issue_token(SECRET, sub=f"d{i}", role=Role.DEVICE, tenant=tenant, ttl=3600)

    async def main() -> None:
        numbers = range(first, first + count)
        await open_many(lambda: FrameCounter(shared), ports, numbers, token_of, 120)
        pipe.send("ready")
        while True:
            await asyncio.sleep(0.1)
            if pipe.poll():
                pipe.recv()
                pipe.send(shared["frames"])
                shared["frames"] = 0

    asyncio.run(main())


async def _publish(port: int, tenant: str, seconds: float) -> int:
    """Publish to `tenant`'s `devices` as fast as acks come back; the acks counted."""
    async with publisher(port, "publisher", ["devices"], tenant) as ws:
        return await keep_publishing(ws, publish_frame("devices"), WINDOW, seconds)


class RedisSet:
    """One Redis or a cluster of `MASTERS`, without persistence or replicas, started on
    entry; its servers' CPU and counters."""

    def __init__(self, cluster: bool) -> None:
        self.cluster = cluster
        self.ports = [cluster_port() for _ in range(MASTERS if cluster else 1)]
        self.url = ",".join(f"redis://127.0.0.1:{port}/0" for port in self.ports)
        self._dir = tempfile.TemporaryDirectory(prefix="hub-shards-")
        self._servers: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> RedisSet:
        for port in self.ports:
            command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
            command += ["--save", "", "--appendonly", "no", "--dir", self._dir.name]
            if self.cluster:
                command += ["--cluster-enabled", "yes"]
                command += ["--cluster-config-file", f"{self._dir.name}/nodes-{port}.conf"]
            self._servers.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
        ports = self.ports
        wait_until(lambda: all(map(redis_answers, ports)), 20, f"redis on {ports} to answer")
        if self.cluster:
            addresses = [f"127.0.0.1:{port}" for port in self.ports]
            made = subprocess.run(
                ["redis-cli", "--cluster", "create", *addresses, "--cluster-yes"],
                capture_output=True,
                text=True,
                check=False,
            )
            if made.returncode != 0:
                self.__exit__()
                said = (made.stdout + made.stderr)[-500:]
                raise RuntimeError(f"redis-cli --cluster create failed: {said}")
            wait_until(lambda: all(map(_cluster_ok, ports)), 20, "the cluster to be ok")
        return self

    def __exit__(self, *_: object) -> None:
        for server in self._servers:
            server.kill()
            server.wait()
        self._dir.cleanup()

    def cpu_seconds(self) -> list[float]:
        return [cpu_seconds(server.pid) for server in self._servers]

    def counters(self) -> tuple[int, int]:
        """Commands run (the scripts' own included) and read events, all servers."""
        commands = reads = 0
        for port in self.ports:
            with redis.Redis(port=port, host="127.0.0.1") as client:
                stats: dict[str, Any] = client.info("commandstats")
                commands += sum(int(entry["calls"]) for entry in stats.values())
                reads += int(client.info("stats")["total_reads_processed"])
        return commands, reads


def _cluster_ok(port: int) -> bool:
    """Whether the server on `port` says its cluster is ok (every slot served)."""
    with redis.Redis(port=port, host="127.0.0.1") as client:
        return b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO")


def _step(
    backend: RedisSet, nodes: Nodes, clients: Clients, tenants: int, seconds: float
) -> dict[str, Any]:
    clients.ask("count", 30)  # forget what the connects left
    before_nodes, before_redis = nodes.cpu_seconds(), backend.cpu_seconds()
    before_commands, before_reads = backend.counters()
    started = time.monotonic()

    async def everyone() -> list[int]:
        ports = nodes.ports
        return await asyncio.gather(
            *(_publish(ports[t % len(ports)], tenant_of(t), seconds) for t in range(tenants))
        )

    published = sum(asyncio.run(everyone()))
    taken = time.monotonic() - started
    time.sleep(0.5)  # the last deliveries
    delivered = sum(clients.ask("count", 30))
    node_cpu = nodes.cpu_seconds() - before_nodes
    redis_cpu = [after - b for after, b in zip(backend.cpu_seconds(), before_redis, strict=True)]
    commands, reads = backend.counters()
    return {
        "setup": f"2 nodes + {'cluster of 3 masters' if backend.cluster else 'one Redis'}",
        "tenants": tenants,
        "published_per_s": round(published / taken),
        "delivered_per_s": round(delivered / taken),
        "node_cpu_pct": round(100 * node_cpu / taken, 1),
        "redis_cpu_pct": [round(100 * cpu / taken, 1) for cpu in redis_cpu],
        "published_per_node_cpu_s": per_cpu_second(published, node_cpu),
        "published_per_redis_cpu_s": per_cpu_second(published, sum(redis_cpu)),
        "redis_commands_per_publish": round((commands - before_commands) / max(published, 1), 1),
        "redis_reads_per_publish": round((reads - before_reads) / max(published, 1), 3),
    }


def run(
    tenants: int, devices: int, seconds: float, cpu: str | None, steps: int = 2
) -> Iterator[dict[str, Any]]:
    """`steps` rows through one Redis, then as many through the cluster."""
    for cluster in (False, True):
        with RedisSet(cluster) as backend:
            settings = {**SILENT, "tenant_publish_bytes": "0", "history_size": "100"}
            if cluster:
                settings["redis_cluster"] = "true"
            with Nodes("shards", backend.url, cpu, settings) as nodes:
                timeout = connect_timeout(devices * tenants) + 30
                total = devices * tenants
                with Clients(_devices, total, nodes.ports, tenants, timeout=timeout) as clients:
                    for _ in range(steps):
                        nodes.settle()
                        yield _step(backend, nodes, clients, tenants, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=12)
    parser.add_argument("--devices", type=int, default=50, help="devices per tenant")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each step")
    parser.add_argument("--steps", type=int, default=2, help="steps per setup")
    parser.add_argument("--server-cpu", help="pin the nodes to these CPUs (taskset)")
    parser.add_argument("--out", default="results/shards.json")
    args = parser.parse_args()
    raise_file_limit()
    rows = run(args.tenants, args.devices, args.seconds, args.server_cpu, args.steps)
    write_rows(rows, args, args.out)


if __name__ == "__main__":
    main()
