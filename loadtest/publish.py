"""Publish-path benchmark: events/s one node accepts, with and without room history.

Several sockets publish as fast as their acks come back (a window of unacknowledged
publishes each) into distinct rooms nobody subscribes to, so the figure is the cost of
accepting, encoding, appending and publishing, not of fan-out.

    python -m loadtest.publish --redis-url redis://127.0.0.1:6379/0 --history-size 1000,0
    python -m loadtest.publish --set otel_endpoint=http://127.0.0.1:4318   # with tracing
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time

import orjson
from websockets.asyncio.client import ClientConnection

from loadtest.fanout import publisher
from loadtest.processes import free_port, start_node


def publish_frame(room: str) -> str:
    """A publish of a 100-byte event to `room`."""
    return orjson.dumps(
        {"op": "publish", "room": room, "event": "x.bench", "data": {"pad": "x" * 100}}
    ).decode()


async def keep_publishing(ws: ClientConnection, frame: str, window: int, seconds: float) -> int:
    """Send `frame` with `window` unacknowledged at all times for `seconds`; the acks."""
    acked = 0
    for _ in range(window):
        await ws.send(frame)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answer = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        if answer["type"] != "ack":
            raise RuntimeError(f"publish refused: {answer}")
        acked += 1
        await ws.send(frame)
    return acked


async def _publisher(port: int, index: int, seconds: float, window: int) -> int:
    async with publisher(port, f"pub-{index}", ["*"]) as ws:
        return await keep_publishing(ws, publish_frame(f"bench:{index}"), window, seconds)


async def _run(port: int, publishers: int, seconds: float, window: int) -> float:
    counts = await asyncio.gather(
        *(_publisher(port, i, seconds, window) for i in range(publishers))
    )
    return sum(counts) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="publish through this Redis (else in-process)")
    parser.add_argument("--history-size", default="1000,0", help="HUB_HISTORY_SIZE values")
    parser.add_argument("--publishers", type=int, default=8)
    parser.add_argument("--window", type=int, default=8, help="publishes in flight per socket")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--server-cpu", help="pin the server to these CPUs (taskset)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a hub setting"
    )
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.set)
    port = free_port()
    for size in args.history_size.split(","):
        server = start_node(
            "publish-bench", port, args.redis_url, args.server_cpu, **settings, history_size=size
        )
        try:
            rate = asyncio.run(_run(port, args.publishers, args.seconds, args.window))
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=15)
        print(f"history_size={size} published_per_s={rate:.0f}", flush=True)


if __name__ == "__main__":
    main()
