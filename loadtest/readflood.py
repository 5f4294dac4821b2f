"""Read-flood benchmark: what one tenant's flood of presence reads costs another tenant's
broadcasts on the same node.

Starts its own node (alone, or through `--redis-url`) with the read rate a deployment has
(`HUB_READ_RATE`, 20/s per token by default). Tenant `quiet` has a device socket in room
`devices` and an operator who broadcasts to it at `--rate` per second; each row reports
the broadcast-to-delivery latency at that device (from the POST's send to the event's
arrival). The first row is the quiet baseline; in the second, tenant `noisy`'s dashboard
token keeps `--readers` presence reads of its own `devices` room (`--members` device
sockets) in flight at all times, from a process of lower priority (so the measuring side
keeps its turn on a shared core), and the row adds the reads answered per second by status
and the node's CPU per read (`node_cpu_us_per_read`, a figure a noisy machine distorts
less than the latency). `--flood-path /healthz` floods with the cheapest request there is
instead, for comparison.

    python -m loadtest.readflood --seconds 10 --server-cpu 0
    python -m loadtest.readflood --redis-url redis://127.0.0.1:6379/0 --alg ES256
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from websockets.asyncio.client import connect

from loadtest.processes import SECRET, cpu_seconds, free_port, raise_file_limit, start_node
from loadtest.rig import latency, write_rows
from loadtest.wire import RawSocket, open_many

ROOM = "devices"
PRESENCE = f"/v1/rooms/{ROOM}/presence"
FLOOD_NICENESS = 10
"""The flooding process yields its core to the measuring one whenever that has work."""
GRACE = 2.0
"""Seconds after the last broadcast that its delivery may still arrive."""
TOKEN_TTL = 3600
IDLE_REUSE = 2.0
"""Seconds a kept-alive connection may have been idle and still be reused: the node closes
idle ones after 5 (uvicorn's keep-alive timeout)."""
CONNECT_TIMEOUT = 120.0
REPORT_TIMEOUT = 120.0
"""Seconds the flood may take past the phase to answer its last reads."""

Signer = Callable[[dict[str, Any]], str]


def signer(alg: str) -> tuple[Signer, dict[str, str]]:
    """Token minting for `alg`, and the node settings that verify what it signs: HS256
    with the benchmark secret, or a fresh RSA 2048 / EC P-256 key pair."""
    if alg == "HS256":
        return lambda claims: jwt.encode(claims, SECRET, algorithm=alg), {}
    private = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if alg == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return lambda claims: jwt.encode(claims, private, algorithm=alg), {
        "jwt_public_key": public.decode()
    }


def token(sign: Signer, sub: str, role: str, tenant: str) -> str:
    return sign({"sub": sub, "role": role, "tenant": tenant, "exp": int(time.time()) + TOKEN_TTL})


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """The status of the next HTTP answer on `reader` (its body read and dropped), and
    whether the node keeps the connection open."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, keep = 0, True
    for line in head.lower().split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip() == b"close":
            keep = False
    await reader.readexactly(length)
    return status, keep


async def _reader(port: int, request: bytes, deadline: float, counts: Counter[int]) -> None:
    """One connection that sends `request` again as soon as each answer is in."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < deadline:
            writer.write(request)
            status, keep = await _answer(reader)
            counts[status] += 1
            if not keep:
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
    finally:
        writer.close()


async def flood(port: int, path: str, readers: int, bearer: str, seconds: float) -> dict[int, int]:
    """`readers` reads of `path` in flight at all times for `seconds`: answers by status."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {bearer}\r\n\r\n"
    ).encode()
    counts: Counter[int] = Counter()
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(_reader(port, request, deadline, counts) for _ in range(readers)))
    return dict(counts)


def _flooder(
    port: int, members: int, readers: int, path: str, tokens: list[str], pipe: Connection
) -> None:
    """The flooding process: the noisy tenant's member sockets, then one flood of `path`
    when asked (the message is its length in seconds), whose counts it sends back."""
    raise_file_limit()
    os.nice(FLOOD_NICENESS)
    *devices, dashboard = tokens

    async def main() -> None:
        await open_many(RawSocket, [port], range(members), devices.__getitem__, CONNECT_TIMEOUT)
        pipe.send("ready")
        seconds = await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        pipe.send(await flood(port, path, readers, dashboard, seconds))
        await asyncio.Event().wait()  # the member sockets stay open until the process ends

    asyncio.run(main())


class Broadcaster:
    """The quiet tenant's operator: a broadcast every 1/`rate` s on time, each over a free
    kept-alive connection (a new one when all are busy), so a slow answer never delays
    the next broadcast."""

    def __init__(self, port: int, bearer: str) -> None:
        self._port, self._bearer = port, bearer
        self._free: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.statuses: Counter[int] = Counter()

    async def run(self, rate: float, seconds: float) -> int:
        start, total = time.monotonic(), int(rate * seconds)
        tasks = []
        for n in range(total):
            await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
            tasks.append(asyncio.create_task(self._send()))
        await asyncio.gather(*tasks)
        return total

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The connection used last, unless the node may have closed it already."""
        while self._free:
            idle_since, reader, writer = self._free.pop()
            if time.monotonic() - idle_since < IDLE_REUSE:
                return reader, writer
            writer.close()
        return await asyncio.open_connection("127.0.0.1", self._port)

    async def _send(self) -> None:
        reader, writer = await self._connection()
        body = orjson.dumps(
            {"room": ROOM, "event": "x.bench", "data": {"sent": time.time() * 1000}}
        )
        writer.write(
            (
                f"POST /v1/broadcast HTTP/1.1\r\nHost: 127.0.0.1:{self._port}\r\n"
                f"Authorization: Bearer {self._bearer}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        status, keep = await _answer(reader)
        self.statuses[status] += 1
        if keep:
            self._free.append((time.monotonic(), reader, writer))
        else:
            writer.close()

    def close(self) -> None:
        for _, _, writer in self._free:
            writer.close()


async def measure(port: int, tokens: dict[str, str], rate: float, seconds: float) -> dict[str, Any]:
    """Broadcast for `seconds` and time each event's arrival at the quiet device."""
    latencies: list[float] = []
    url = f"ws://127.0.0.1:{port}/v1/ws"
    headers = {"Authorization": f"Bearer {tokens['device']}"}
    async with connect(url, additional_headers=headers, compression=None) as ws:
        await ws.recv()  # the welcome

        async def receive() -> None:
            async for message in ws:
                sent = orjson.loads(message).get("data", {}).get("sent")
                if sent is not None:
                    latencies.append(time.time() * 1000 - sent)

        receiving = asyncio.create_task(receive())
        broadcaster = Broadcaster(port, tokens["operator"])
        sent = await broadcaster.run(rate, seconds)
        await asyncio.sleep(GRACE)
        receiving.cancel()
        broadcaster.close()
    refused = sum(n for status, n in broadcaster.statuses.items() if status != 202)
    return {"broadcasts": sent, "delivered": len(latencies), "refused": refused} | latency(
        latencies
    )


def _phase(
    name: str,
    pid: int,
    run: Callable[[], dict[str, Any]],
    flooder: Connection | None,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One row: the broadcasts' figures, the node's CPU, and the flood's answers if any."""
    cpu, start = cpu_seconds(pid), time.monotonic()
    if flooder is not None:
        flooder.send(args.seconds + GRACE)
    row: dict[str, Any] = {"phase": name, **run()}
    if flooder is not None and not flooder.poll(REPORT_TIMEOUT):
        raise RuntimeError("the flooding process did not report")
    counts: dict[int, int] = flooder.recv() if flooder is not None else {}
    cpu, span = cpu_seconds(pid) - cpu, time.monotonic() - start
    row["node_cpu_pct"] = round(cpu / span * 100, 1)
    if counts:
        reads = sum(counts.values())
        row["reads_per_s"] = round(reads / span)
        row |= {f"reads_{status}_per_s": round(n / span) for status, n in sorted(counts.items())}
        row["node_cpu_us_per_read"] = round(cpu / reads * 1e6)
    return row


def _rows(port: int, pid: int, args: argparse.Namespace, sign: Signer) -> list[dict[str, Any]]:
    tokens = {
        "device": token(sign, "quiet-device", "device", "quiet"),
        "operator": token(sign, "quiet-operator", "operator", "quiet"),
    }
    noisy = [token(sign, f"noisy-{i}", "device", "noisy") for i in range(args.members)]
    noisy.append(token(sign, "noisy-dashboard", "dashboard", "noisy"))
    context = mp.get_context("spawn")
    mine, theirs = context.Pipe()
    process = context.Process(
        target=_flooder,
        args=(port, args.members, args.readers, args.flood_path, noisy, theirs),
        daemon=True,
    )
    process.start()
    try:
        if not mine.poll(CONNECT_TIMEOUT) or mine.recv() != "ready":
            raise RuntimeError("the flooding process did not open its sockets")

        def run() -> dict[str, Any]:
            return asyncio.run(measure(port, tokens, args.rate, args.seconds))

        rows = [_phase("quiet", pid, run, None, args)]
        rows.append(_phase("flood", pid, run, mine, args))
        return rows
    finally:
        process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="run the node through this Redis (else alone)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--readers", type=int, default=300, help="reads in flight")
    parser.add_argument("--flood-path", default=PRESENCE, help="what the flood reads")
    parser.add_argument("--members", type=int, default=200, help="sockets in the read room")
    parser.add_argument("--rate", type=float, default=20.0, help="quiet broadcasts per second")
    parser.add_argument("--read-rate", default="20", help="HUB_READ_RATE of the node")
    parser.add_argument("--alg", choices=["HS256", "RS256", "ES256"], default="HS256")
    parser.add_argument("--server-cpu", help="pin the server to these CPUs (taskset)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a hub setting"
    )
    parser.add_argument("--out", default="results/readflood.json")
    args = parser.parse_args()
    sign, keys = signer(args.alg)
    settings = {"read_rate": args.read_rate, **keys}
    settings |= dict(item.split("=", 1) for item in args.set)
    port = free_port()
    node = start_node("readflood", port, args.redis_url, args.server_cpu, **settings)
    try:
        write_rows(_rows(port, node.pid, args, sign), args, args.out)
    finally:
        node.send_signal(signal.SIGINT)
        with contextlib.suppress(Exception):
            node.wait(timeout=15)
        node.kill()


if __name__ == "__main__":
    main()
