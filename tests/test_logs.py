"""HUB_LOG_FORMAT=json: every line a node writes is one JSON object naming the node, and the
socket when it is about one; never a token, whatever the format."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from hub.config import Settings
from hub.logs import Context, uvicorn_log_config
from tests.conftest import NodeFactory
from tests.support import (
    SECRET,
    Client,
    HubNode,
    RedisServer,
    eventually,
    token,
)


def _lines(output: str) -> list[dict[str, Any]]:
    """Every line of `output` as a JSON object: any other line fails the test."""
    lines = []
    for number, line in enumerate(output.splitlines(), 1):
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise AssertionError(f"line {number} is not JSON: {line!r}") from None
        assert isinstance(parsed, dict), line
        lines.append(parsed)
    return lines


def _settings(**env: str) -> Settings:
    return Settings(jwt_secret=SECRET, **env)  # type: ignore[arg-type]


def test_text_is_uvicorns_own_config_unchanged() -> None:
    from uvicorn.config import LOGGING_CONFIG

    config = uvicorn_log_config(_settings())
    assert config == LOGGING_CONFIG
    assert config is not LOGGING_CONFIG


def test_a_node_id_set_is_every_workers_and_an_unset_one_each_processs_own() -> None:
    named = uvicorn_log_config(_settings(log_format="json", node_id="n1"))
    assert named["filters"]["context"]["node"] == "n1"
    unnamed = uvicorn_log_config(_settings(log_format="json"))
    assert unnamed["filters"]["context"]["node"] is None
    assert Context(None).node == f"{socket.gethostname()}-{os.getpid()}"


PROBE = """
import asyncio, logging, logging.config
from hub.config import Settings
from hub.logs import configure, uvicorn_log_config
logging.config.dictConfig(uvicorn_log_config(Settings()))
configure()
log = logging.getLogger("hub")
SOCKET = {"conn": "7.1", "sub": "player-1", "role": "device", "tenant": "acme"}
async def socket_task():
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("closed %s after an internal error", "7.1", extra=SOCKET)
async def main():
    await asyncio.create_task(socket_task())
    log.info("outside any socket")
    logging.getLogger("hub.presence").warning("a child logger")
    logging.getLogger("asyncio").error("another library")
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/healthz?token=abc.def.ghi", "1.1", 200
    )
asyncio.run(main())
"""


def test_json_lines_carry_node_socket_and_traceback_one_line_each() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_")}
    env.update(HUB_JWT_SECRET=SECRET, HUB_LOG_FORMAT="json", HUB_NODE_ID="n1")
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = _lines(done.stdout + done.stderr)
    by_message = {line["message"]: line for line in lines}
    assert len(by_message) == 5, lines
    assert all(line["node"] == "n1" and line["time"].endswith("+00:00") for line in lines)
    failed = by_message["closed 7.1 after an internal error"]
    assert (failed["level"], failed["logger"]) == ("ERROR", "hub")
    assert (failed["conn"], failed["sub"], failed["role"], failed["tenant"]) == (
        "7.1",
        "player-1",
        "device",
        "acme",
    )
    assert "ZeroDivisionError" in failed["traceback"]
    assert failed["traceback"].startswith("Traceback")
    for message in ("outside any socket", "a child logger", "another library"):
        assert "conn" not in by_message[message], by_message[message]
    access = by_message['127.0.0.1:1 - "GET /healthz?token=[redacted] HTTP/1.1" 200']
    assert access["logger"] == "uvicorn.access"
    assert "abc.def.ghi" not in done.stdout + done.stderr


async def test_a_json_node_writes_only_json_lines_with_node_and_socket_and_no_token(
    redis_server: RedisServer,
) -> None:
    node = HubNode("j1", redis_server.url, log_format="json", redis_ulr="a typo")
    try:
        node.start()
        tokens = await _exercise(node, redis_server)
    finally:
        node.stop()
    output = node.output()
    assert not [bearer for bearer in tokens if bearer in output]
    lines = _lines(output)
    assert all(line["node"] == "j1" for line in lines)
    assert all("color_message" not in line for line in lines)
    assert {"uvicorn.error", "uvicorn.access", "hub"} <= {line["logger"] for line in lines}
    assert any(line["message"].startswith("HUB_REDIS_ULR is not a setting") for line in lines)
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert any("/healthz?token=[redacted]" in line["message"] for line in access), access
    accepted = [line for line in lines if "[accepted]" in line["message"]]
    assert any("/v1/ws?token=[redacted]" in line["message"] for line in accepted), accepted
    refused = [line for line in lines if "broker unavailable while joining" in line["message"]]
    assert len(refused) == 1, lines
    assert refused[0]["level"] == "WARNING"
    assert (refused[0]["sub"], refused[0]["role"], refused[0]["tenant"]) == (
        "player-2",
        "device",
        "acme",
    )
    assert refused[0]["message"].startswith(f"closed {refused[0]['conn']}: ")
    started = [line for line in lines if line["message"].startswith("node j1 started")]
    assert len(started) == 1
    assert "conn" not in started[0]


async def _exercise(node: HubNode, redis_server: RedisServer) -> list[str]:
    """A socket with its token in the query, REST calls, then a socket refused because
    Redis went away: each writes a line. The tokens it used."""
    player = token("device", "player-1")
    device = await Client.connect(node, player, query=True)
    operator = token("operator", "script")
    answer = node.broadcast(operator, room="devices", event="command", data={"name": "reboot"})
    assert answer.status_code == 202, answer.text
    assert (await device.next_event())["event"] == "command"
    secret = token("dashboard", "d")
    assert httpx.get(f"{node.url}/healthz", params={"token": secret}).status_code == 200
    redis_server.stop()
    await eventually(lambda: not node.ready(), 20, "the node to see Redis gone")
    refused = token("device", "player-2")
    ws = await connect(f"{node.ws_url}?token={refused}", compression=None)
    try:
        await ws.recv()
        raise AssertionError("a device was welcomed while Redis was away")
    except ConnectionClosed:
        pass
    await eventually(
        lambda: "broker unavailable while joining" in node.output(), 10, "the refusal's line"
    )
    await device.ws.close()
    return [player, operator, secret, refused]


async def test_lifecycle_decisions_are_one_json_line_each_with_their_fields(
    hub_node: NodeFactory, redis_server: RedisServer
) -> None:
    """Registering presence, a node declared dead and its devices reaped, a drain started
    and ended: each one line with an `event` and its figures as fields."""
    fast = {"heartbeat_interval": 2.0, "heartbeat_timeout": 10.0, "node_ttl": 3.0}
    survivor = hub_node("s", redis_server.url, log_format="json", drain_seconds=0.5, **fast)
    doomed = hub_node("d", redis_server.url, **fast)
    devices = [await Client.connect(doomed, token("device", f"p{n}")) for n in range(3)]
    await Client.connect(survivor, token("device", "stays"))
    doomed.signal(signal.SIGKILL)

    def decided(event: str) -> list[dict[str, Any]]:
        return [line for line in _lines(survivor.output()) if line.get("event") == event]

    await eventually(lambda: bool(decided("nodes_reaped")), 20, "the survivor to reap d")
    [reaped] = decided("nodes_reaped")
    assert (reaped["declared"], reaped["devices"]) == (1, 3)
    assert reaped["message"].endswith("[event=nodes_reaped declared=1 devices=3]")
    [registered] = decided("presence_registered")
    assert registered["sockets"] == 0
    assert registered["instance"].startswith("s.")
    survivor.stop()
    [started] = decided("drain_started")
    assert (started["sockets"], started["seconds"]) == (1, 0.5)
    [ended] = decided("drain_ended")
    assert (ended["closed"], ended["left"]) == (1, 0)
    for device in devices:
        device.cut()
