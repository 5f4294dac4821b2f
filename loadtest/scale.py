"""Scale run: as many node processes as fit, through a Redis Cluster, with device sockets
spread over several client processes (each holds at most `PER_PROCESS`: a process may
open 20,000 files), every device beating; presence and stats checked against the truth.

    python -m loadtest.scale --nodes 4 --devices 40000 --tenants 20 --seconds 60

The cluster is three masters without replicas (the machine has two cores). Reported: the
time to connect everyone (handshakes/s), each node's memory per socket and CPU while the
devices beat, each Redis' CPU, and whether `/v1/stats` and `/v1/devices` of every tenant
agree with the sockets the clients hold.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from multiprocessing.connection import Connection
from typing import Any

import httpx

from hub.auth import Role, issue_token
from loadtest.heartbeats import HEARTBEAT as BEAT
from loadtest.processes import SECRET, raise_file_limit, rss_bytes
from loadtest.rig import Clients, Nodes, write_rows
from loadtest.shards import RedisSet, tenant_of
from loadtest.wire import TEXT, RawSocket, frame, open_many

HEARTBEAT = frame(TEXT, BEAT)


def _devices(
    first: int,
    count: int,
    ports: list[int],
    tenants: int,
    interval: float,
    pipe: Connection,
) -> None:
    """One client process: its devices, each beating every `interval` seconds (spread
    evenly), then on each message how many are open."""
    raise_file_limit()

    def token_of(i: int) -> str:
        tenant = tenant_of(i % tenants)
        return issue_token(SECRET, sub=f"d{i}", role=Role.DEVICE, tenant=tenant, ttl=7200)

    async def main() -> None:
        numbers = range(first, first + count)
        sockets = await open_many(RawSocket, ports, numbers, token_of, 600)
        pipe.send("ready")
        beating = asyncio.create_task(_beat(sockets, interval))
        while True:
            await asyncio.sleep(0.1)
            if pipe.poll():
                pipe.recv()
                if beating.done():
                    beating.result()  # the beat failed: end the process with its error
                pipe.send(sum(not socket.closed for socket in sockets))

    asyncio.run(main())


async def _beat(sockets: list[RawSocket], interval: float) -> None:
    """Each open socket sends a heartbeat every `interval` seconds, spread evenly."""
    while True:
        start = time.monotonic()
        for n, socket in enumerate(sockets):
            if not socket.closed:
                socket.transport.write(HEARTBEAT)
            if n % 100 == 99:
                await asyncio.sleep(
                    max(0.0, start + interval * n / len(sockets) - time.monotonic())
                )
        await asyncio.sleep(max(0.0, start + interval - time.monotonic()))


def _fleet_online(port: int, tenant: str) -> int:
    """Online devices of `tenant` in `/v1/devices`, every page."""
    bearer = issue_token(SECRET, sub="auditor", role=Role.OPERATOR, tenant=tenant, ttl=600)
    online, after = 0, None
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        while True:
            params: dict[str, str] = {"online": "true", "limit": "1000"}
            if after:
                params["after"] = after
            page = http.get(
                "/v1/devices", params=params, headers={"Authorization": f"Bearer {bearer}"}
            )
            page.raise_for_status()
            body: dict[str, Any] = page.json()
            online += len(body["devices"])
            after = body.get("next")
            if not after:
                return online


def _stats(port: int) -> dict[str, Any]:
    bearer = issue_token(SECRET, sub="auditor", role=Role.ADMIN, tenant=None, ttl=600)
    answer = httpx.get(
        f"http://127.0.0.1:{port}/v1/stats",
        headers={"Authorization": f"Bearer {bearer}"},
        timeout=30,
    )
    answer.raise_for_status()
    stats: dict[str, Any] = answer.json()
    return stats


def run(
    nodes: int, devices: int, tenants: int, seconds: float, interval: float, cpu: str | None
) -> dict[str, Any]:
    with RedisSet(cluster=True) as backend:
        # A client process starts beating once all its devices are connected, which takes
        # longer than three intervals for the first of them: the timeout waits for that.
        settings = {"redis_cluster": "true", "heartbeat_interval": str(interval)}
        settings["heartbeat_timeout"] = str(max(interval * 3, 600.0))
        with Nodes("scale", backend.url, cpu, settings, count=nodes) as started:
            ports = started.ports
            connect_started = time.monotonic()
            with Clients(
                _devices, devices, ports, tenants, interval, timeout=600 + devices / 100
            ) as clients:
                connected = time.monotonic() - connect_started
                before_nodes, before_redis = started.cpu_seconds(), backend.cpu_seconds()
                time.sleep(seconds)
                node_cpu = started.cpu_seconds() - before_nodes
                redis_cpu = [
                    after - b for after, b in zip(backend.cpu_seconds(), before_redis, strict=True)
                ]
                open_now = sum(clients.ask("count", 30))
                time.sleep(2 * 2)  # two figure periods: every node's latest is posted
                stats = _stats(ports[0])
                online = sum(_fleet_online(ports[0], tenant_of(t)) for t in range(tenants))
                memory = [rss_bytes(pid) for pid in started.pids()]
    return {
        "nodes": nodes,
        "devices": devices,
        "tenants": tenants,
        "client_processes": len(clients.shares),
        "connect_s": round(connected, 1),
        "handshakes_per_s": round(devices / connected),
        "open_sockets": open_now,
        "stats_device_connections": stats["cluster"]["connections"]["device"],
        "fleet_online": online,
        "node_rss_kib_per_socket": round(sum(memory) / devices / 1024, 2),
        "node_cpu_pct_beating": round(100 * node_cpu / seconds, 1),
        "heartbeats_per_s": round(devices / interval),
        "redis_cpu_pct": [round(100 * cpu_s / seconds, 1) for cpu_s in redis_cpu],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--devices", type=int, default=40000)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long they beat")
    parser.add_argument("--interval", type=float, default=15.0, help="heartbeat interval, s")
    parser.add_argument("--server-cpu", help="pin the nodes to these CPUs (taskset)")
    parser.add_argument("--out", default="results/scale.json")
    args = parser.parse_args()
    raise_file_limit()
    row = run(args.nodes, args.devices, args.tenants, args.seconds, args.interval, args.server_cpu)
    write_rows([row], args, args.out)


if __name__ == "__main__":
    main()
