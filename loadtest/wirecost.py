"""What keeping one device connected costs on the wire: bytes per heartbeat cycle each way,
and the megabytes a month that make, for screens on metered links.

Starts one node, and for each heartbeat interval asked for, one device whose token claims
it (`heartbeat`), connected through a TCP relay of its own on loopback that counts the
payload bytes (and the reads that carried them, about one TCP segment each) in each
direction. The handshake is counted up to the device's welcome; then the device runs
`--cycles` heartbeat cycles of its welcome's interval, answering the hub's pings, and the
window is counted apart. The devices run side by side, so the longest interval sets the
time a run takes (three cycles of 240 s: 12 minutes).

    taskset -c 1 python -m loadtest.wirecost --heartbeat 15,240 --cycles 3 --server-cpu 0

A month is 30 days of cycles and one handshake (a connection that stays up); TCP/IP
headers, TLS and a token's refresh are not counted. The device is a transport's function
(`TRANSPORTS`: `--transport websocket`, or `stream` for the event stream, whose POSTs go
through the same relay).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from hub.auth import Role, issue_token
from hub.dial import Connection
from hub.stream_client import StreamConnection
from loadtest.processes import SECRET, free_port, start_node

DAY = 86400.0
MONTH_DAYS = 30
MEGABYTE = 1_000_000
HEARTBEAT = orjson.dumps({"op": "heartbeat", "data": {"status": "ok"}}).decode()
"""What the client library sends by default."""
TENANT = "meter"


@dataclass
class Count:
    """Payload bytes, and the reads that carried them, in one direction."""

    bytes: int = 0
    reads: int = 0

    def minus(self, other: Count) -> Count:
        return Count(self.bytes - other.bytes, self.reads - other.reads)


@dataclass
class Meter:
    """What one relayed connection carried each way, with the moments a device marks: its
    welcome (the handshake's end), and the end of its last cycle."""

    up: Count = field(default_factory=Count)
    """From the device to the hub."""
    down: Count = field(default_factory=Count)
    marks: list[tuple[Count, Count]] = field(default_factory=list)

    def mark(self) -> None:
        self.marks.append((replace(self.up), replace(self.down)))


Device = Callable[[int, str, int, Meter], Awaitable[float]]
"""A device of one transport: connects to the relay on loopback `port` with `token`, marks
the meter once it is welcomed, beats for `cycles` cycles of the welcome's interval, marks
it again, and returns the interval."""


async def websocket_device(port: int, token: str, cycles: int, meter: Meter) -> float:
    """A device on `/v1/ws` as the protocol has it: a heartbeat at the welcome and then
    every interval, the hub's pings answered, no pings of its own."""
    headers = {"Authorization": f"Bearer {token}"}
    url = f"ws://127.0.0.1:{port}/v1/ws"
    async with connect(url, additional_headers=headers, compression=None, ping_interval=None) as ws:
        return await _beat(ws, cycles, meter)


async def stream_device(port: int, token: str, cycles: int, meter: Meter) -> float:
    """A device on the event stream as the Python client runs it (`hub.stream_client`):
    its stream, and a heartbeat POSTed at the welcome and then every interval."""
    url = f"http://127.0.0.1:{port}/v1/stream"
    connection = await StreamConnection.open(url, token, lambda: token, 10.0)
    try:
        return await _beat(connection, cycles, meter)
    finally:
        await connection.close()


async def _beat(connection: Connection, cycles: int, meter: Meter) -> float:
    """From the welcome, which marks the meter, a heartbeat now and every interval for
    `cycles` intervals, reading whatever the hub sends; the meter marked again. Returns the
    welcome's interval."""
    welcome = orjson.loads(await connection.recv())
    if welcome.get("type") != "welcome":
        raise RuntimeError(f"expected a welcome, got {welcome}")
    meter.mark()
    interval = float(welcome["heartbeat"]["interval"])
    loop = asyncio.get_running_loop()
    start = loop.time()
    reading = asyncio.create_task(_read_on(connection.recv))
    try:
        for cycle in range(cycles):
            await connection.send(HEARTBEAT)
            await asyncio.sleep(start + (cycle + 1) * interval - loop.time())
        meter.mark()
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
            await reading
    return interval


async def _read_on(recv: Callable[[], Awaitable[object]]) -> None:
    """Take whatever the hub sends (events, notices), as a device does."""
    while True:
        await recv()


TRANSPORTS: dict[str, Device] = {"websocket": websocket_device, "stream": stream_device}


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: Count) -> None:
    try:
        while data := await reader.read(65536):
            count.bytes += len(data)
            count.reads += 1
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def relay(node_port: int, meter: Meter) -> asyncio.Server:
    """A loopback listener that relays each connection to the node, counting into `meter`."""

    async def relayed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", node_port)
        # A connection still open when the run ends (a kept-alive one) ends with it, quietly.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(
                _pump(reader, upstream_writer, meter.up),
                _pump(upstream_reader, writer, meter.down),
            )

    return await asyncio.start_server(relayed, "127.0.0.1", 0)


@dataclass(frozen=True)
class Cost:
    """One device's wire cost: the handshake's bytes, and one cycle's, each way."""

    claim: int
    interval: float
    cycles: int
    handshake: tuple[Count, Count]
    window: tuple[Count, Count]

    @property
    def cycles_per_day(self) -> float:
        return DAY / self.interval

    def per_cycle(self, count: Count) -> float:
        return count.bytes / self.cycles

    @property
    def month_mb(self) -> float:
        up, down = self.handshake
        cycle = self.per_cycle(self.window[0]) + self.per_cycle(self.window[1])
        return (up.bytes + down.bytes + MONTH_DAYS * self.cycles_per_day * cycle) / MEGABYTE

    def line(self) -> str:
        (hs_up, hs_down), (up, down) = self.handshake, self.window
        return (
            f"heartbeat={self.claim} cycles={self.cycles} handshake_up={hs_up.bytes} "
            f"handshake_down={hs_down.bytes} cycle_up={self.per_cycle(up):.1f} "
            f"cycle_down={self.per_cycle(down):.1f} reads_up={up.reads / self.cycles:.2f} "
            f"reads_down={down.reads / self.cycles:.2f} "
            f"cycles_per_day={self.cycles_per_day:.1f} mb_per_month={self.month_mb:.4f}"
        )


async def measure(node_port: int, claim: int, cycles: int, device: Device) -> Cost:
    meter = Meter()
    server = await relay(node_port, meter)
    port = server.sockets[0].getsockname()[1]
    token = issue_token(
        SECRET,
        sub=f"meter-{claim}",
        role=Role.DEVICE,
        tenant=TENANT,
        ttl=DAY,
        extra={"heartbeat": claim},
    )
    try:
        interval = await device(port, token, cycles, meter)
    finally:
        server.close()
    (hs_up, hs_down), (end_up, end_down) = meter.marks
    window = (end_up.minus(hs_up), end_down.minus(hs_down))
    return Cost(claim, interval, cycles, (hs_up, hs_down), window)


async def _run(node_port: int, claims: list[int], cycles: int, device: Device) -> list[Cost]:
    return list(await asyncio.gather(*(measure(node_port, c, cycles, device) for c in claims)))


def _claims(text: str) -> list[int]:
    try:
        claims = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of whole seconds") from None
    if not claims or min(claims) < 1 or max(claims) > 3600:
        raise argparse.ArgumentTypeError("each interval is 1 to 3600 s")
    return claims


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--heartbeat", type=_claims, default=[15], help="intervals the devices claim, s [15]"
    )
    parser.add_argument("--cycles", type=_positive, default=3, help="cycles per device [3]")
    parser.add_argument("--transport", choices=sorted(TRANSPORTS), default="websocket")
    parser.add_argument("--server-cpu", help="the core the node is pinned to (taskset)")
    args = parser.parse_args()
    port = free_port()
    # The node takes any claim the tool is given; its own interval is the default.
    node = start_node(
        "wirecost", port, None, args.server_cpu, heartbeat_min="1", heartbeat_max="3600"
    )
    try:
        costs = asyncio.run(_run(port, args.heartbeat, args.cycles, TRANSPORTS[args.transport]))
    finally:
        node.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.wait(timeout=10)
        node.kill()
    for cost in costs:
        print(f"transport={args.transport} {cost.line()}", flush=True)


if __name__ == "__main__":
    main()
