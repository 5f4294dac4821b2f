"""How long `hub serve` takes from its process's start to its first 200 on `/readyz`: what
an autoscaler waits for before a new node takes sockets.

    python -m loadtest.startup --starts 12 --server-cpu 0 [--redis-url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from typing import Any

from loadtest.processes import free_port, launch_node, wait_ready
from loadtest.rig import write_rows

POLL = 0.005
"""Seconds between asks of `/readyz`: well below the start being measured."""


def run(starts: int, redis_url: str | None, cpu: str | None) -> Iterator[dict[str, Any]]:
    """One row per start, then one with the median, the fastest and the slowest."""
    taken = []
    for n in range(starts):
        name, port = f"start-{n}", free_port()
        began = time.monotonic()
        node = launch_node(name, port, redis_url, cpu)
        wait_ready(name, port, node, poll=POLL)
        taken.append(time.monotonic() - began)
        node.terminate()
        node.wait(timeout=15)
        yield {"start": n + 1, "ready_s": round(taken[-1], 3)}
    yield {
        "starts": starts,
        "median_s": round(statistics.median(taken), 3),
        "min_s": round(min(taken), 3),
        "max_s": round(max(taken), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=12)
    parser.add_argument("--redis-url", help="start nodes with this Redis (default: alone)")
    parser.add_argument("--server-cpu", help="pin the nodes to these CPUs (taskset)")
    parser.add_argument("--out", default="results/startup.json")
    args = parser.parse_args()
    write_rows(run(args.starts, args.redis_url, args.server_cpu), args, args.out)


if __name__ == "__main__":
    main()
