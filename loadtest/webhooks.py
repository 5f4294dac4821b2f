"""Webhook benchmark: messages one node delivers per second (and per CPU-second), and the
time from a device's disconnect to its `device.offline` webhook, the grace excluded.

Throughput: one node on a Redis, `--tenants` tenants with an endpoint each, all at a
receiver in its own process; `--messages` `delivery.receipt` events of `--devices` subs
per tenant are appended to the tenants' `status` streams at once (as the hub appends
them), and the node delivers the backlog. What is measured is the webhook engine (its
reads, records, signatures and posts), not the sockets that would have made the events.

Latency: `HUB_WEBHOOK_OFFLINE_GRACE=0`; `--latency-devices` devices connect, then close
one at a time; each close is timed to its offline's arrival at the receiver. Alone (no
`--redis-url`) and through Redis, where the tenant's lease holder reads its stream.

    python -m loadtest.webhooks --redis-url redis://127.0.0.1:6379/0 --server-cpu 0
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import time
from multiprocessing.connection import Connection
from typing import Any

import orjson
import redis
from websockets.asyncio.client import connect

from hub import envelope
from hub.auth import Role, issue_token
from hub.rooms import RoomKey
from loadtest.processes import HTTP, SECRET, free_port
from loadtest.rig import Nodes, latency, per_cpu_second, write_rows

HOOKS = {
    "webhook_allow_private": "true",
    "webhook_offline_grace": "0",
    "heartbeat_interval": "300",
    "heartbeat_timeout": "600",
}
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def receive(port: int, cpu: int | None, pipe: Connection) -> None:
    """The back office: answers every post at once, keep-alive, and when asked tells how
    many it took and when each `device.offline` came (wall clock, by device)."""
    if cpu is not None:
        import os

        os.sched_setaffinity(0, {cpu})
    taken = 0
    offline: dict[str, float] = {}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal taken
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            body = await reader.readexactly(_length(head))
            taken += 1
            if b'"device.offline"' in body:
                offline[orjson.loads(body)["data"]["device"]] = time.time()
            writer.write(ANSWER)
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=1024)
        pipe.send("ready")
        async with server:
            while True:
                await asyncio.to_thread(pipe.poll, None)
                if pipe.recv() == "stop":
                    return
                pipe.send((taken, offline))

    asyncio.run(main())


def _length(head: bytes) -> int:
    """A request head's `Content-Length`, 0 without one."""
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


class Receiver:
    def __init__(self, cpu: int | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        context = mp.get_context("spawn")
        self._pipe, theirs = context.Pipe()
        self._process = context.Process(target=receive, args=(self.port, cpu, theirs))
        self._process.start()
        assert self._pipe.recv() == "ready"

    def seen(self) -> tuple[int, dict[str, float]]:
        self._pipe.send("count")
        taken, offline = self._pipe.recv()
        return taken, offline

    def stop(self) -> None:
        self._pipe.send("stop")
        self._process.join(5)
        self._process.kill()


def register(port: int, tenant: str, url: str, events: list[str]) -> None:
    bearer = issue_token(SECRET, sub="bench", role=Role.OPERATOR, tenant=tenant, ttl=3600)
    answer = HTTP.post(
        f"http://127.0.0.1:{port}/v1/webhooks",
        json={"url": url, "events": events},
        headers={"Authorization": f"Bearer {bearer}"},
    )
    answer.raise_for_status()


def append_receipts(redis_url: str, tenants: list[str], messages: int, devices: int) -> None:
    """`messages` receipts spread over the tenants, as the hub appends them to `status`."""
    client = redis.Redis.from_url(redis_url)
    with client.pipeline(transaction=False) as pipe:
        for n in range(messages):
            tenant = tenants[n % len(tenants)]
            data = {
                "sub": f"d{n % devices}",
                "role": "device",
                "room": "r",
                "id": "1-0",
                "status": "done",
            }
            event = envelope.encode("status", "delivery.receipt", data, int(time.time() * 1000))
            prefix, _ = envelope.parts(event, keeps_history=True)
            pipe.xadd("hub:h:" + RoomKey(tenant, "status").name, {"p": prefix})
            if n % 1000 == 999:
                pipe.execute()
        pipe.execute()


def throughput(args: argparse.Namespace, run: str) -> dict[str, Any]:
    receiver = Receiver(args.receiver_cpu)
    tenants = [f"{run}-t{n}" for n in range(args.tenants)]
    try:
        with Nodes(f"wh-{run}", args.redis_url, args.server_cpu, HOOKS, count=1) as nodes:
            for tenant in tenants:  # each its own back office's URL
                register(nodes.ports[0], tenant, f"{receiver.url}/{tenant}", ["delivery.receipt"])
            before = receiver.seen()[0]
            cpu = nodes.cpu_seconds()
            started = time.monotonic()
            append_receipts(args.redis_url, tenants, args.messages, args.devices)
            deadline = started + args.timeout
            while receiver.seen()[0] - before < args.messages and time.monotonic() < deadline:
                time.sleep(0.05)
            took = time.monotonic() - started
            delivered = receiver.seen()[0] - before
            used = nodes.cpu_seconds() - cpu
    finally:
        receiver.stop()
    return {
        "scenario": "throughput",
        "tenants": args.tenants,
        "messages": args.messages,
        "delivered": delivered,
        "seconds": round(took, 2),
        "per_second": round(delivered / took),
        "node_cpu_s": round(used, 2),
        "per_cpu_second": per_cpu_second(delivered, used),
    }


async def _offline_latency(port: int, tenant: str, receiver: Receiver, count: int) -> list[float]:
    sockets = []
    for n in range(count):
        bearer = issue_token(SECRET, sub=f"p{n}", role=Role.DEVICE, tenant=tenant, ttl=3600)
        sockets.append(
            await connect(f"ws://127.0.0.1:{port}/v1/ws?token={bearer}", compression=None)
        )
    await asyncio.sleep(1.0)
    closed: dict[str, float] = {}
    for n, socket in enumerate(sockets):
        closed[f"p{n}"] = time.time()
        await socket.close()
        await asyncio.sleep(0.05)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        _, offline = receiver.seen()
        if len(offline) >= count:
            break
        await asyncio.sleep(0.1)
    return [(offline[sub] - at) * 1000 for sub, at in closed.items() if sub in offline]


def offline_latency(args: argparse.Namespace, run: str, redis_url: str | None) -> dict[str, Any]:
    receiver = Receiver(args.receiver_cpu)
    tenant = f"{run}-latency"
    try:
        with Nodes(f"whl-{run}", redis_url, args.server_cpu, HOOKS, count=1) as nodes:
            register(nodes.ports[0], tenant, receiver.url, ["device.offline"])
            values = asyncio.run(
                _offline_latency(nodes.ports[0], tenant, receiver, args.latency_devices)
            )
    finally:
        receiver.stop()
    return {
        "scenario": "offline latency",
        "setup": "one node + Redis" if redis_url else "one node alone",
        "devices": args.latency_devices,
        "webhooks": len(values),
        **latency(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True, help="the Redis the node keeps webhooks in")
    parser.add_argument("--tenants", type=int, default=8)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--devices", type=int, default=1000, help="subs per tenant")
    parser.add_argument("--latency-devices", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--server-cpu", help="pin the node to these CPUs (taskset)")
    parser.add_argument("--receiver-cpu", type=int, help="pin the receiver to this CPU")
    parser.add_argument("--out", default="/tmp/webhooks-bench.json")
    args = parser.parse_args()
    run = f"b{int(time.time())}"

    def rows() -> Any:
        yield throughput(args, run)
        yield offline_latency(args, run, None)
        yield offline_latency(args, run, args.redis_url)

    write_rows(rows(), args, args.out)


if __name__ == "__main__":
    main()
