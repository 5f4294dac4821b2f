"""The README's demos, run as the README has them (read from the file, not copied here)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import NodeFactory
from tests.support import eventually, required, token

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _block(heading: str, language: str) -> str:
    """The first `language` block of the README's section `heading`."""
    section = README.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)
    assert found is not None, f"no {language} block under {heading}"
    return found[1]


def _free(*ports: int) -> None:
    for port in ports:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                pytest.fail(f"port {port} is taken: the README's demo needs it")


def _run(block: str) -> str:
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_")}
    done = subprocess.run(
        ["bash", "-c", block],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_the_one_terminal_demo_works_as_written() -> None:
    _free(8000)
    output = _run(_block("Try it in one terminal", "sh"))
    for seen in (
        '"event":"device.online"',
        '"event":"device.heartbeat"',
        '"event":"content.update"',
    ):
        assert seen in output, output
    assert '"ids":{"location:lobby":' in output, output
    assert "Traceback" not in output, output


def test_the_two_node_demo_works_as_written() -> None:
    required("redis-server")
    _free(8001, 8002, 6390)
    output = _run(_block("Two nodes through Redis", "sh"))
    assert '"event":"command"' in output, output
    assert '"event":"device.online"' in output, output
    assert '"node":"a"' in output, output  # the player's own node, seen from node b
    assert "Traceback" not in output, output


def test_the_state_fleet_and_receipts_demo_works_as_written() -> None:
    _free(8000)
    output = _run(_block("What a screen needs: current state, the fleet, receipts", "sh"))
    assert '"event":"playlist.update"' in output, output
    assert '"state":true' in output, output
    assert '"status":"done"' in output, output  # the command's receipt
    assert '"sub":"player-1","online":false' in output, output
    assert '"offline_reason":"closed"' in output, output
    assert "Traceback" not in output, output


async def test_the_python_example_runs_as_pasted(hub_node: NodeFactory) -> None:
    """Only the URL is the test node's; the token is a dashboard's, in `TOKEN`."""
    node = hub_node("solo")
    example = _block("Nothing lost across a reconnect", "python")
    example = example.replace("ws://127.0.0.1:8000/v1/ws", node.ws_url)
    operator = token("operator", "o")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        example,
        env={**os.environ, "TOKEN": token("dashboard", "d1")},
        stdout=asyncio.subprocess.PIPE,
    )
    try:

        def present() -> bool:
            members = node.get("/v1/rooms/location:lobby/presence", operator).json()["members"]
            return any(member["sub"] == "d1" for member in members)

        await eventually(present, 20, "the example's client to join location:lobby")
        answer = node.broadcast(operator, room="location:lobby", event="x.demo", data={"n": 1})
        assert answer.status_code == 202
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
        assert "'event': 'x.demo'" in line, line
        assert "'data': {'n': 1}" in line, line
    finally:
        process.kill()
        await process.wait()


def test_the_webhooks_demo_works_as_written() -> None:
    """The back office of the demo hears the player's online, then its offline once the
    grace has passed; the registration showed the secret."""
    _free(8000, 9000)
    output = _run(_block("The back office hears about its screens: webhooks", "sh"))
    assert '"secret":"whsec_' in output, output
    lines = [line for line in output.splitlines() if line.startswith("msg_")]
    kinds = [line.split('"type":"', 1)[1].split('"', 1)[0] for line in lines]
    assert kinds == ["device.online", "device.offline"], output
    assert '"device":"player-1"' in lines[1]
