"""A ping flood against one node, and what the node's other clients see meanwhile.

One socket sends `--mib` MiB of 125-byte masked pings, 500 to a write, and never reads (a
4 KiB receive buffer), as the outside probe of the hub did; meanwhile another client asks
`/healthz` every `--poll` seconds. Reports how long those health checks took, how much the
node grew at most, and how much of the flood it took before it dropped the socket.

    .venv/bin/python -m loadtest.pingflood --server-cpu 0 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import threading
import time
from typing import Any

import httpx
from websockets.frames import Frame, Opcode

from hub.auth import Role, issue_token
from loadtest.processes import SECRET, free_port, rss_bytes, start_node
from loadtest.rig import latency

UPGRADE = (
    "GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    "Authorization: Bearer {bearer}\r\n\r\n"
)
PINGS_PER_WRITE = 500


def flood(port: int, mib: int) -> tuple[int, float]:
    """Send the pings until done or dropped: the bytes the node took, and the seconds."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", port))
    bearer = issue_token(SECRET, sub="pinger", role=Role.DASHBOARD, tenant="bench", ttl=600)
    raw.sendall(UPGRADE.format(bearer=bearer).encode())
    head = b""
    while b"\r\n\r\n" not in head:  # frames sent before the 101 are not the probe's
        head += raw.recv(1)
    burst = Frame(Opcode.PING, b"p" * 125).serialize(mask=True) * PINGS_PER_WRITE
    sent, started = 0, time.monotonic()
    with contextlib.suppress(OSError):
        while sent < mib << 20:
            raw.sendall(burst)
            sent += len(burst)
    elapsed = time.monotonic() - started
    raw.close()
    return sent, elapsed


def health_checks(
    port: int, pid: int, poll: float, done: threading.Event, rss: list[int]
) -> list[float]:
    """Milliseconds each `/healthz` took until `done`, each on a fresh connection; the
    node's resident memory after each goes to `rss`."""
    taken: list[float] = []
    with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as client:
        while not done.is_set():
            started = time.perf_counter()
            try:
                client.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
            except httpx.HTTPError:
                taken.append(10_000.0)
            else:
                taken.append((time.perf_counter() - started) * 1000)
            rss.append(rss_bytes(pid))
            time.sleep(poll)
    return taken


def one_round(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    node = start_node("flooded", port, None, args.server_cpu, client_rate="50", ping_interval="600")
    try:
        before = rss_bytes(node.pid)
        done = threading.Event()
        checks: list[float] = []
        rss: list[int] = [before]
        poller = threading.Thread(
            target=lambda: checks.extend(health_checks(port, node.pid, args.poll, done, rss)),
            daemon=True,
        )
        poller.start()
        sent, seconds = flood(port, args.mib)
        time.sleep(0.5)
        done.set()
        poller.join()
        grown = max(rss) - before
    finally:
        node.terminate()
        node.wait()
    return {
        "flood_mib_taken": round(sent / (1 << 20), 1),
        "flood_seconds": round(seconds, 2),
        "rss_peak_growth_mib": round(grown / (1 << 20), 1),
        "healthz_ms": latency(checks),
        "healthz_checks": len(checks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=40, help="MiB of pings to send")
    parser.add_argument("--poll", type=float, default=0.02, help="seconds between health checks")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--server-cpu", help="pin the node to this CPU (taskset)")
    args = parser.parse_args()
    for _ in range(args.rounds):
        print(one_round(args), flush=True)


if __name__ == "__main__":
    main()
