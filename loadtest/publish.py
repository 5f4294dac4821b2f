"""Publish-path benchmark: events/s one node accepts, with and without room history.

Several sockets publish as fast as their acks come back (a window of unacknowledged
publishes each) into distinct rooms nobody subscribes to, so the figure is the cost of
accepting, encoding, appending and publishing, not of fan-out.

    python -m loadtest.publish --redis-url redis://127.0.0.1:6379/0 --history-size 1000,0
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time

import orjson

from loadtest.fanout import publisher
from loadtest.processes import start_node


async def _publisher(port: int, index: int, seconds: float, window: int) -> int:
    frame = orjson.dumps(
        {"op": "publish", "room": f"bench:{index}", "event": "x.bench", "data": {"pad": "x" * 100}}
    ).decode()
    acked = 0
    async with publisher(port, f"pub-{index}", ["*"]) as ws:
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
    args = parser.parse_args()
    port = 30000 + os.getpid() % 10000
    for size in args.history_size.split(","):
        server = start_node(
            "publish-bench", port, args.redis_url, args.server_cpu, history_size=size
        )
        try:
            rate = asyncio.run(_run(port, args.publishers, args.seconds, args.window))
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=15)
        print(f"history_size={size} published_per_s={rate:.0f}", flush=True)


if __name__ == "__main__":
    main()
