"""The test support itself: `eventually` keeps the test's own clients served, and a node
under test is the node, not whatever else answers on its port."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import HubNode, eventually


async def test_a_blocking_check_leaves_the_event_loop_running() -> None:
    ticks = 0
    loop_thread = threading.get_ident()
    checked_in: set[int] = set()

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    def blocking_check() -> bool:
        checked_in.add(threading.get_ident())
        time.sleep(0.05)  # a blocking HTTP request would hold the thread like this
        return ticks >= 10

    ticking = asyncio.create_task(tick())
    try:
        await eventually(blocking_check, 30, "the loop to tick")
    finally:
        ticking.cancel()
    assert loop_thread not in checked_in


async def test_a_coroutine_check_is_awaited_on_the_loop() -> None:
    answers = iter([False, False, True])
    loop_thread = threading.get_ident()
    checked_in: set[int] = set()

    async def check() -> bool:
        checked_in.add(threading.get_ident())
        return next(answers)

    await eventually(check, 30, "the third answer", interval=0.001)
    assert checked_in == {loop_thread}


async def test_a_check_that_never_holds_times_out_naming_what_was_awaited() -> None:
    with pytest.raises(TimeoutError, match="timed out waiting for the impossible"):
        await eventually(lambda: False, 0.2, "the impossible")


async def test_a_check_that_hangs_still_times_out() -> None:
    release = threading.Event()
    try:
        with pytest.raises(TimeoutError, match="timed out waiting for a hung check"):
            await eventually(lambda: release.wait(30), 0.2, "a hung check")
    finally:
        release.set()


async def test_an_error_in_the_check_is_not_mistaken_for_the_deadline() -> None:
    def broken() -> bool:
        raise TimeoutError("the check's own")

    with pytest.raises(TimeoutError, match="the check's own"):
        await eventually(broken, 30, "a broken check")


class _Stranger(http.server.BaseHTTPRequestHandler):
    """Another test's server on the port a node was given: it says yes to every ask."""

    def do_GET(self) -> None:
        body = b'{"status": "ok", "ready": true, "node": "stranger"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads the node's answers, not the stranger's log."""


@pytest.fixture
def node(tmp_path: Path) -> Iterator[HubNode]:
    node = HubNode("itself", log_dir=tmp_path)
    yield node
    node.stop()


def test_a_stranger_on_the_port_is_not_taken_for_the_node(node: HubNode) -> None:
    taken = node.port
    stranger = http.server.ThreadingHTTPServer(("127.0.0.1", taken), _Stranger)
    serving = threading.Thread(target=stranger.serve_forever, daemon=True)
    serving.start()
    try:
        node.start()
    finally:
        stranger.shutdown()
        stranger.server_close()
    assert node.port != taken
    assert httpx.get(node.url + "/readyz").json() == {"ready": True, "node": "itself"}


def test_a_restart_keeps_the_port_clients_know(node: HubNode) -> None:
    node.start()
    known = node.port
    node.stop()
    node.start()
    assert node.port == known
    assert httpx.get(node.url + "/healthz").json()["node"] == "itself"
