"""`hub listen`: events as JSON lines, a device's own rooms and heartbeats without `--room`,
one line and exit 1 on a refusal for good, a warning line per retry and never a traceback."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import orjson
import pytest

from tests.conftest import NodeFactory
from tests.support import Client, HubNode, eventually, free_port, token

OPERATOR = token("operator", "o1")


def _env(bearer: str | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_")}
    if bearer is not None:
        env["HUB_TOKEN"] = bearer
    return env


def _listen(bearer: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    """`hub listen` run to its end (it ends only when refused)."""
    return subprocess.run(
        [sys.executable, "-m", "hub", "listen", *args],
        env=_env(bearer),
        capture_output=True,
        text=True,
        timeout=60,
    )


@contextmanager
def _listener(bearer: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """`hub listen` running in the background, terminated afterwards."""
    process = subprocess.Popen(
        [sys.executable, "-m", "hub", "listen", *args],
        env=_env(bearer),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=10)


class _Lines(list[str]):
    """`stream`'s lines, filled in by a thread as they come."""

    def __init__(self, stream: IO[str] | None) -> None:
        super().__init__()
        assert stream is not None
        self._thread = threading.Thread(
            target=lambda: self.extend(iter(stream.readline, "")), daemon=True
        )
        self._thread.start()

    def finish(self) -> list[str]:
        """Every line, once the stream has ended."""
        self._thread.join(10)
        return list(self)


async def _publish_until_printed(
    node: HubNode, out: list[str], room: str, timeout: float = 20
) -> dict[str, object]:
    """Broadcast to `room` until the listener printed an event of it; that event."""
    async with asyncio.timeout(timeout):
        while True:
            for line in out:
                event: dict[str, object] = orjson.loads(line)
                if event["room"] == room:
                    return event
            await asyncio.to_thread(
                node.broadcast, OPERATOR, room=room, event="alert", data=_alert()
            )
            await asyncio.sleep(0.3)


def _alert() -> dict[str, str]:
    return {"level": "info", "message": "hello"}


async def test_hub_listen_prints_events_as_json_Lines(single: HubNode) -> None:
    with _listener(token("dashboard", "d1"), "--room", "alerts", "--url", single.ws_url) as p:
        event = await _publish_until_printed(single, _Lines(p.stdout), "alerts")
        assert (event["event"], event["data"]) == ("alert", _alert())


async def test_a_device_needs_no_room_and_heartbeats_on_the_welcomes_interval(
    hub_node: NodeFactory,
) -> None:
    node = hub_node("beats", heartbeat_interval=1, heartbeat_timeout=3)
    watcher = await Client.watching_status(node)
    with _listener(token("device", "p1", loc="lobby"), "--url", node.ws_url) as listener:
        out = _Lines(listener.stdout)
        await _publish_until_printed(node, out, "device:p1")
        await _publish_until_printed(node, out, "location:lobby")
        # The default interval (15 s) would give one heartbeat here; 1 s gives several,
        # and a device that heartbeats too rarely would be closed after 3 s.
        beats = await watcher.events(
            lambda seen: sum(e["event"] == "device.heartbeat" for e in seen) >= 4, timeout=15
        )
        assert {e["data"]["device"] for e in beats if e["event"] == "device.heartbeat"} == {"p1"}
        assert not [e for e in beats if e["event"] == "device.offline"]
        assert listener.poll() is None
    await watcher.close()


def test_a_bad_token_exits_1_with_one_line(refusing: HubNode) -> None:
    bad = token("dashboard", "d1", secret="another-secret-just-as-long-as-the-real")
    result = _listen(bad, "--room", "alerts", "--url", refusing.ws_url)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "hub: refused: 401 invalid token: Signature verification failed"
    ]
    assert result.stdout == ""


def test_a_forbidden_room_exits_1_with_one_line(single: HubNode) -> None:
    device = token("device", "p1", loc="lobby")
    result = _listen(device, "--room", "location:x", "--url", single.ws_url)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "hub: refused: subscribe location:x: forbidden: not allowed to subscribe to location:x"
    ]


@pytest.mark.parametrize(
    ("bearer", "args", "said"),
    [
        (token("dashboard", "d1"), [], "give --room"),
        (None, ["--room", "alerts"], "give --token or set HUB_TOKEN"),
        (token("dashboard", "d1"), ["--room", "a", "--url", "http://x/v1/ws"], "not a WebSocket"),
    ],
)
def test_usage_errors_exit_2_before_connecting(
    bearer: str | None, args: list[str], said: str
) -> None:
    result = _listen(bearer, *args)
    assert result.returncode == 2
    assert said in result.stderr
    assert "Traceback" not in result.stderr


async def test_an_unreachable_url_gives_a_warning_line_per_attempt_and_no_traceback() -> None:
    url = f"ws://127.0.0.1:{free_port()}/v1/ws"
    with _listener(token("dashboard", "d1"), "--room", "alerts", "--url", url) as listener:
        err = _Lines(listener.stderr)

        async def warned_thrice() -> bool:
            return len(err) >= 3

        await eventually(warned_thrice, 30, "three warning lines")
        assert listener.poll() is None
    for line in err.finish():
        assert line.startswith(f"hub: warning: cannot connect to {url}: "), line
        assert " retrying in " in line


def test_hub_listen_into_head_ends_after_its_line_with_no_event_after_it(
    single: HubNode,
) -> None:
    """`hub listen | head -1`: the listener ends once `head` has gone, not at the next
    event. A device's state is its first line; nothing is published after it starts."""
    content = {"content_id": "c1", "version": 1}
    single.broadcast(OPERATOR, room="location:lobby", event="content.update", data=content)
    listener = subprocess.Popen(
        [sys.executable, "-m", "hub", "listen", "--url", single.ws_url],
        env=_env(token("device", "p1", loc="lobby")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    head = subprocess.Popen(["head", "-1"], stdin=listener.stdout, stdout=subprocess.PIPE)
    assert listener.stdout is not None
    listener.stdout.close()  # head's alone now, as in a shell's pipeline
    try:
        line, _ = head.communicate(timeout=30)
        assert orjson.loads(line)["data"] == content
        # A bound on what it waits for, not a speed: a listener that noticed the reader gone
        # only at its next write would wait here for an event that never comes.
        assert listener.wait(timeout=10) == 0
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    assert listener.stderr is not None
    assert listener.stderr.read() == b""
    listener.stderr.close()


def test_listen_help_says_a_device_needs_no_room() -> None:
    result = _listen(None, "--help")
    assert result.returncode == 0
    assert "A device token needs no --room" in " ".join(result.stdout.split())


async def test_a_device_listener_prints_state_first_and_acknowledges_commands(
    single: HubNode,
) -> None:
    content = {"content_id": "c1", "version": 1}
    single.broadcast(OPERATOR, room="location:lobby", event="content.update", data=content)
    device = token("device", "p1", loc="lobby")
    with _listener(device, "--ack-commands", "--url", single.ws_url) as listener:
        out = _Lines(listener.stdout)
        await eventually(lambda: len(out) >= 1, 10, "the state line")
        first = orjson.loads(out[0])
        assert (first["event"], first["state"]) == ("content.update", True)
        answer = await asyncio.to_thread(
            single.broadcast, OPERATOR, room="device:p1", event="command", data={"name": "reboot"}
        )
        event_id = answer.json()["ids"]["device:p1"]
        path = f"/v1/rooms/device:p1/events/{event_id}/receipts"

        def done() -> bool:
            listed = single.get(path, OPERATOR).json()["receipts"]
            return [r["status"] for r in listed] == ["done"]

        await eventually(done, 10, "the command's done receipt")
