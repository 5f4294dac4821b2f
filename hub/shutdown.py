"""SIGTERM drains the node before the server stops, and the process then exits 0.

uvicorn's own SIGTERM handling closes the listening socket and every WebSocket at once
(all clients reconnect to the other nodes in the same instant, and `/readyz` can no
longer say why), then re-raises the signal, so the process dies of it. Instead, once the
node has started, hub takes SIGTERM over: the first one runs the drain (`/readyz` answers
503 `draining` from the first moment, the sockets close spread over `HUB_DRAIN_SECONDS`,
and the node keeps listening for `HUB_UNREADY_SECONDS` at least, so that a load balancer
checking every second or two sees it leave before it stops answering) and then asks
uvicorn to stop as it would on its own (`should_exit`), which still waits for requests in
flight and runs the lifespan shutdown. A second SIGTERM, or SIGINT, stops at once as
before.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

log = logging.getLogger("hub")


def drain_on_sigterm(drain: Callable[[], Awaitable[None]]) -> None:
    """Install the handler, when running under uvicorn's signal handling in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return
    uvicorn_exit = signal.getsignal(signal.SIGTERM)
    server: Any = getattr(uvicorn_exit, "__self__", None)
    if server is None or not hasattr(server, "should_exit") or not callable(uvicorn_exit):
        return
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    requested = False

    async def drain_then_exit() -> None:
        try:
            await drain()
        except Exception:
            log.exception("drain failed; stopping now")
        finally:
            server.should_exit = True

    def start() -> None:
        log.info("SIGTERM: draining")
        tasks.add(loop.create_task(drain_then_exit(), name="drain"))

    def on_sigterm(sig: int, frame: FrameType | None) -> None:
        nonlocal requested
        if requested or server.should_exit:
            uvicorn_exit(sig, frame)
            return
        requested = True
        loop.call_soon_threadsafe(start)

    signal.signal(signal.SIGTERM, on_sigterm)
