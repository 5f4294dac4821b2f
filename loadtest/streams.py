"""What an event stream costs next to a socket: idle memory per session and opens accepted
per second, then fan-out into one room (deliveries/s, latency, loss, the node's CPU).

Each step starts a node of its own and runs once per transport, the order alternating from
round to round, so that a noisy machine weighs on both alike. The clients are raw asyncio
connections spread over processes: a stream is a hand-written `GET /v1/stream` whose
chunked body is cut into SSE messages, a socket is `loadtest.wire`'s. Both count events the
same way, decoding every `--sample`-th for its latency from the event's `ts`. The operator
publishes to `devices`, which every device joins by itself, through `POST /v1/broadcast` at
each rate, for both transports.

    taskset -c 1 python -m loadtest.streams --server-cpu 0 --idle 2000,10000 \\
        --subscribers 2000 --rate 10,25,50,100 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import httpx
import orjson

from hub.auth import Role, issue_token
from loadtest.bench import IDLE_PENDING
from loadtest.processes import HTTP, SECRET, raise_file_limit, rss_bytes, wait_until
from loadtest.rig import (
    SILENT,
    Clients,
    Nodes,
    connect_timeout,
    latency,
    per_cpu_second,
    write_rows,
)
from loadtest.wire import RawSocket, open_many

TRANSPORTS = ("stream", "websocket")
STEPS = ("idle", "fanout")
IDLE_SETTLE = 3.0
"""Seconds the node rests before its memory is read (presence writes, the collector), by
default (`--settle`)."""
CLOSED_TIMEOUT = 15.0
"""Seconds the node may take to end every session once its clients are gone."""
QUIET = 2.0
"""A step's events are all in once none came for this long."""
POST_TIMEOUT = 30.0
"""Seconds a broadcast may take: an overloaded node answers late, and a late answer is
still a published event; past this it counts as refused."""
EVENT_OVERHEAD = 110
"""Bytes of an event's frame besides its padding: `--size` is the whole frame."""


@dataclass(slots=True)
class Tally:
    """The events one client process counted since its last report."""

    sample: int
    events: int = 0
    latencies: list[float] = field(default_factory=list)

    def count(self, buffer: bytearray, start: int, end: int) -> None:
        """One event at `buffer[start:end]`; every `sample`-th is decoded for its latency."""
        self.events += 1
        if self.events % self.sample == 0:
            stamped = orjson.loads(bytes(buffer[start:end])).get("ts")
            if stamped is not None:
                self.latencies.append(time.time() * 1000 - stamped)

    def report(self) -> tuple[int, list[float]]:
        """The counts since the last report, which start again from zero."""
        report = (self.events, self.latencies)
        self.events, self.latencies = 0, []
        return report


class RawStream(asyncio.Protocol):
    """A raw event-stream client: a hand-written `GET`, the response's head checked, its
    chunked body cut into SSE messages without a parser library, cheap enough to hold
    thousands on one core. The first `data:` message (the welcome) makes it ready, later
    ones go to `text`; the hub's `close` event marks it closed."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.messages = bytearray()
        self.started = False
        self.closed = False
        self._left = 0
        """Bytes of the current chunk still to come."""
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, _exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before the welcome"))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.started and not self._start(buffer):
            return
        at = 0
        while at < len(buffer):
            if self._left:
                take = min(self._left, len(buffer) - at)
                self.messages += buffer[at : at + take]
                at += take
                self._left -= take
                continue
            line_end = buffer.find(b"\r\n", at)
            if line_end < 0:
                break
            line = bytes(buffer[at:line_end])
            at = line_end + 2
            if line:  # else the line break that ends the chunk before
                self._left = int(line.split(b";", 1)[0], 16)
        del buffer[:at]
        self._split()

    def _start(self, buffer: bytearray) -> bool:
        """Read the response's head off `buffer`; True once the stream is accepted."""
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(buffer[:end]).lower()
        if not head.startswith(b"http/1.1 200") or b"transfer-encoding: chunked" not in head:
            self.ready.set_exception(RuntimeError(bytes(buffer[:200]).decode(errors="replace")))
            self.transport.close()
            return False
        del buffer[: end + 4]
        self.started = True
        return True

    def _split(self) -> None:
        """Take each whole SSE message: `data:` ones, and the hub's `close` event."""
        messages = self.messages
        at = 0
        while (end := messages.find(b"\n\n", at)) >= 0:
            if messages.startswith(b"data: ", at):
                if self.ready.done():
                    self.text(messages, at + 6, end)
                else:
                    self.ready.set_result(None)
            elif messages.startswith(b"event: close", at):
                self.closed = True
            at = end + 2
        del messages[:at]

    def text(self, buffer: bytearray, start: int, end: int) -> None:
        """A message's data after the welcome, at `buffer[start:end]`."""


class StreamCounter(RawStream):
    """A device on a stream, counting into its process's tally as `SocketCounter` does:
    both transports are counted by the same code."""

    def __init__(self, tally: Tally) -> None:
        super().__init__()
        self.tally = tally

    def text(self, buffer: bytearray, start: int, end: int) -> None:
        self.tally.count(buffer, start, end)


class SocketCounter(RawSocket):
    """A device on a socket, counting into its process's tally."""

    def __init__(self, tally: Tally) -> None:
        super().__init__()
        self.tally = tally

    def text(self, buffer: bytearray, start: int, end: int) -> None:
        self.tally.count(buffer, start, end)


Client = RawStream | RawSocket


async def open_streams(
    protocol: Callable[[], RawStream],
    port: int,
    numbers: range,
    token_of: Callable[[int], str],
    timeout: float,
) -> list[RawStream]:
    """Open a stream for each number, from 200 loopback source addresses in turn as
    `loadtest.wire.open_many` does for sockets; return them once each has its welcome."""
    loop = asyncio.get_running_loop()
    streams = []
    for i in numbers:
        source = (f"127.0.0.{2 + i % 200}", 0)
        _, stream = await loop.create_connection(protocol, "127.0.0.1", port, local_addr=source)
        request = (
            f"GET /v1/stream?token={token_of(i)} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        )
        stream.transport.write(request.encode())
        streams.append(stream)
    await asyncio.wait_for(asyncio.gather(*(s.ready for s in streams)), timeout)
    return streams


def _devices(
    first: int, count: int, port: int, transport: str, sample: int, pipe: Connection
) -> None:
    """One client process (`loadtest.rig.Clients`): open its devices' streams or sockets,
    say ready, then answer each "report" with (first open, last welcome, events counted,
    their sampled latencies, sessions the node ended, its CPU time so far)."""
    raise_file_limit()

    def token_of(i: int) -> str:
        return issue_token(SECRET, sub=f"dev-{i}", role=Role.DEVICE, tenant="bench", ttl=7200)

    async def main() -> None:
        tally = Tally(sample)
        numbers = range(first, first + count)
        timeout = connect_timeout(count)
        started = time.monotonic()
        clients: Sequence[Client]
        if transport == "stream":
            clients = await open_streams(
                lambda: StreamCounter(tally), port, numbers, token_of, timeout
            )
        else:
            clients = await open_many(
                lambda: SocketCounter(tally), [port], numbers, token_of, timeout
            )
        welcomed = time.monotonic()
        loop = asyncio.get_running_loop()
        pipe.send("ready")
        while True:
            await loop.run_in_executor(None, pipe.recv)
            events, latencies = tally.report()
            ended = sum(client.closed for client in clients)
            pipe.send((started, welcomed, events, latencies, ended, time.process_time()))

    asyncio.run(main())


def _metric(name: str, port: int) -> float:
    """One sample of the node's `/metrics`, by its full name with labels."""
    for line in HTTP.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise RuntimeError(f"{name} is not in /metrics")


def _open_sessions(transport: str, port: int) -> int:
    return round(_metric(f'hub_transport_connections{{transport="{transport}"}}', port))


def idle(
    transport: str, devices: int, cpu: str | None, turn: int, settle: float = IDLE_SETTLE
) -> dict[str, Any]:
    """Memory per idle session and opens accepted per second on a node of its own. Then the
    clients go, the node must end every session, and as many again must fit in the memory
    the first ones left: a node's RSS seldom shrinks, so a leak shows as growth."""
    settings = {
        **SILENT,
        "max_connections": str(devices),
        "max_pending_requests": str(IDLE_PENDING),
    }
    with Nodes("streams-idle", None, cpu, settings) as nodes:
        [pid], [port] = nodes.pids(), nodes.ports
        time.sleep(settle)
        before = rss_bytes(pid)
        first = _hold(transport, devices, port, pid, settle)
        left_open = _closed(transport, port, settle)
        again = _hold(transport, devices, port, pid, settle)
        return {
            "step": "idle",
            "transport": transport,
            "round": turn,
            "sessions": devices,
            "held": first.held,
            "ended_by_node": first.ended + again.ended,
            "accepted_per_s": first.accepted_per_s,
            "rss_before_mib": round(before / 2**20, 1),
            "rss_after_mib": round(first.rss / 2**20, 1),
            "kib_per_session": round((first.rss - before) / devices / 1024, 2),
            "left_open_after_close": left_open,
            "rss_reopened_mib": round(again.rss / 2**20, 1),
            "reopened_growth_mib": round((again.rss - first.rss) / 2**20, 1),
            "left_open_at_end": _closed(transport, port, settle),
        }


@dataclass(frozen=True, slots=True)
class _Held:
    """What holding a fleet of idle sessions showed."""

    held: int
    """Sessions the node counted open."""
    ended: int
    """Sessions the node ended meanwhile (none should be)."""
    accepted_per_s: int
    rss: int


def _hold(transport: str, devices: int, port: int, pid: int, settle: float) -> _Held:
    """Open `devices` idle sessions, read the node's figures, then kill their processes."""
    timeout = connect_timeout(devices) + 30
    with Clients(_devices, devices, port, transport, 1, timeout=timeout) as clients:
        answers = clients.ask("report", 30)
        time.sleep(settle)
        opening = max(answer[1] for answer in answers) - min(answer[0] for answer in answers)
        return _Held(
            held=_open_sessions(transport, port),
            ended=sum(answer[4] for answer in answers),
            accepted_per_s=round(devices / opening),
            rss=rss_bytes(pid),
        )


def _closed(transport: str, port: int, settle: float) -> int:
    """Sessions the node still holds once it had `CLOSED_TIMEOUT` to end those whose
    clients went, and then a rest."""
    with contextlib.suppress(TimeoutError):  # the row shows how many are left
        wait_until(lambda: _open_sessions(transport, port) == 0, CLOSED_TIMEOUT, "closes")
    time.sleep(settle)
    return _open_sessions(transport, port)


async def _broadcast(port: int, rate: float, seconds: float, size: int) -> tuple[int, int]:
    """`POST /v1/broadcast` to `devices` at `rate` for `seconds`, as an operator's script
    would; (accepted, refused)."""
    token = issue_token(
        SECRET, sub="streams-operator", role=Role.OPERATOR, tenant="bench", ttl=3600
    )
    body = orjson.dumps(
        {
            "room": "devices",
            "event": "x.bench",
            "data": {"pad": "x" * max(0, size - EVENT_OVERHEAD)},
        }
    )
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=POST_TIMEOUT
    ) as http:

        async def post() -> bool:
            try:
                answer = await http.post("/v1/broadcast", content=body)
            except httpx.HTTPError:
                return False
            return answer.status_code == 202

        total = round(rate * seconds)
        start = time.monotonic()
        posts = []
        for n in range(total):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            posts.append(asyncio.create_task(post()))
        accepted = sum(await asyncio.gather(*posts))
    return accepted, total - accepted


def fan_out(
    transport: str,
    subscribers: int,
    rates: list[float],
    args: argparse.Namespace,
    turn: int,
) -> Iterator[dict[str, Any]]:
    """One row per rate: `subscribers` devices on one node, each in `devices`."""
    with Nodes("streams-fanout", None, args.server_cpu, SILENT) as nodes:
        [port] = nodes.ports
        timeout = connect_timeout(subscribers) + 30
        with Clients(
            _devices, subscribers, port, transport, args.sample, timeout=timeout
        ) as clients:
            clients.ask("report", 30)
            for rate in rates:
                nodes.settle()
                yield _step(nodes, clients, transport, subscribers, rate, args, turn)


def _step(
    nodes: Nodes,
    clients: Clients,
    transport: str,
    subscribers: int,
    rate: float,
    args: argparse.Namespace,
    turn: int,
) -> dict[str, Any]:
    """Broadcast at `rate`; gather the counts until all came or none came for `QUIET`."""
    [port] = nodes.ports
    load_before = sum(answer[5] for answer in clients.ask("report", 30))
    before, started = nodes.cpu_seconds(), time.monotonic()
    accepted, refused = asyncio.run(_broadcast(port, rate, args.seconds, args.size))
    sending_cpu, sending = nodes.cpu_seconds() - before, time.monotonic() - started
    expected = accepted * subscribers
    delivered, latencies, ended, load = 0, [], 0, 0.0
    quiet_since = time.monotonic()
    while delivered < expected and time.monotonic() - quiet_since < QUIET:
        time.sleep(0.2)
        answers = clients.ask("report", 30)
        fresh = sum(answer[2] for answer in answers)
        delivered += fresh
        latencies += list(itertools.chain.from_iterable(answer[3] for answer in answers))
        ended = sum(answer[4] for answer in answers)
        load = sum(answer[5] for answer in answers) - load_before
        if fresh:
            quiet_since = time.monotonic()
    cpu, elapsed = nodes.cpu_seconds() - before, time.monotonic() - started
    return {
        "step": "fanout",
        "transport": transport,
        "round": turn,
        "subscribers": subscribers,
        "rate": rate,
        "published": accepted,
        "refused": refused,
        "expected": expected,
        "delivered": delivered,
        "loss": expected - delivered,
        "broadcast_s": round(sending, 1),
        "delivered_per_s": round(delivered / max(args.seconds, sending)),
        **latency(latencies),
        "node_cpu_pct": round(100 * sending_cpu / sending, 1),
        "node_cpu_s": round(cpu, 2),
        "delivered_per_cpu_s": per_cpu_second(delivered, cpu),
        "load_cpu_pct": round(100 * load / elapsed, 1),
        "ended_by_node": ended,
    }


def run(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """Every step, once per transport and round, the transports' order alternating."""
    transports = args.transports.split(",")
    steps = args.only.split(",")
    rates = [float(rate) for rate in args.rate.split(",")]
    for turn in range(1, args.rounds + 1):
        order = transports if turn % 2 else transports[::-1]
        if "idle" in steps:
            for count in (int(n) for n in args.idle.split(",")):
                for transport in order:
                    yield idle(transport, count, args.server_cpu, turn, args.settle)
        if "fanout" in steps:
            for transport in order:
                yield from fan_out(transport, args.subscribers, rates, args, turn)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.streams", description=" ".join(__doc__.split("\n\n")[0].split())
    )
    parser.add_argument("--only", default=",".join(STEPS), help="steps: idle, fanout")
    parser.add_argument("--transports", default=",".join(TRANSPORTS), help="stream, websocket")
    parser.add_argument("--rounds", type=int, default=2, help="runs of every step")
    parser.add_argument("--idle", default="2000,10000", help="idle sessions, comma-separated")
    parser.add_argument("--subscribers", type=int, default=2000, help="devices for fan-out")
    parser.add_argument("--rate", default="10,25,50,100", help="broadcasts/s per step")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each step")
    parser.add_argument("--size", type=int, default=200, help="approximate event size, bytes")
    parser.add_argument("--sample", type=int, default=50, help="decode every Nth event")
    parser.add_argument(
        "--settle", type=float, default=IDLE_SETTLE, help="seconds the node rests before a read"
    )
    parser.add_argument("--server-cpu", help="pin the node to these CPUs (taskset)")
    parser.add_argument("--out", default="results/streams.json")
    args = parser.parse_args()
    for name, chosen, known in (
        ("--only", args.only, STEPS),
        ("--transports", args.transports, TRANSPORTS),
    ):
        unknown = set(chosen.split(",")) - set(known)
        if unknown:
            parser.error(f"{name}: unknown {', '.join(sorted(unknown))}")
    raise_file_limit()
    write_rows(run(args), args, args.out)


if __name__ == "__main__":
    main()
