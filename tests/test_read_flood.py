"""One token flooding a node with reads: each read refused costs a lookup, neither a
signature check nor a round trip to Redis, and the refusals keep their contract; a page
of a large room costs its page."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from hub.auth import Role
from hub.presence import Present
from hub.rooms import RoomKey
from tests.conftest import NodeFactory
from tests.inprocess import running
from tests.support import Client, RedisServer, eventually, token

CONNECTIONS = 30
PER_CONNECTION = 10
PRESENCE = "/v1/rooms/devices/presence"
COUNTING = '''"""Counts this process's token verifications (`jwt.decode`) into $JWT_DECODES_FILE."""
import os

import jwt

_decode, _calls = jwt.decode, [0]


def _counted(*args, **kwargs):
    _calls[0] += 1
    with open(os.environ["JWT_DECODES_FILE"], "w") as out:
        out.write(str(_calls[0]))
    return _decode(*args, **kwargs)


jwt.decode = _counted
'''


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


async def _keep_reading(port: int, request: bytes) -> list[Answer]:
    """One kept-alive connection that sends `request` again as each answer comes in."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    try:
        for _ in range(PER_CONNECTION):
            writer.write(request)
            status_line, *lines = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
            fields = (line.split(":", 1) for line in lines if line)
            headers = {name.lower(): value.strip() for name, value in fields}
            body = await reader.readexactly(int(headers["content-length"]))
            answers.append(Answer(int(status_line.split()[1]), headers, body))
    finally:
        writer.close()
    return answers


async def _flood(port: int, path: str, bearer: str) -> list[Answer]:
    """`CONNECTIONS` raw connections reading `path` with one token, as fast as answered."""
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bearer}\r\n\r\n"
    each = await asyncio.gather(
        *(_keep_reading(port, request.encode()) for _ in range(CONNECTIONS))
    )
    return [answer for answers in each for answer in answers]


def _admitted(answers: list[Answer]) -> int:
    """How many were answered; every other one was refused as the contract says."""
    refused = [answer for answer in answers if answer.status != 200]
    for answer in refused:
        assert answer.status == 429, answer
        assert int(answer.headers["retry-after"]) >= 1
        error = orjson.loads(answer.body)["error"]
        assert error["code"] == "rate_limited"
        assert error["message"] == "over 2 reads/s, retry later"
    assert len(refused) > len(answers) // 2, "the flood was not refused"
    return len(answers) - len(refused)


async def test_a_flood_of_refused_reads_verifies_its_token_once(
    hub_node: NodeFactory, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(COUNTING)
    counted = tmp_path / "decodes"
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    node = hub_node(
        "solo", read_rate=2, environ={"PYTHONPATH": path, "JWT_DECODES_FILE": str(counted)}
    )
    greedy = token("dashboard", "greedy")
    _admitted(await _flood(node.port, PRESENCE, greedy))
    assert int(counted.read_text()) == 1
    # The limit is still the subject's, and only the token itself is remembered: a
    # forged copy of it is checked, and refused.
    assert node.get(PRESENCE, token("dashboard", "other")).status_code == 200
    head, claims, signature = greedy.split(".")
    forged = f"{head}.{claims}.{signature[:-4]}AAAA"
    assert node.get(PRESENCE, forged).status_code == 401


async def _monitor(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection to Redis that is sent every command Redis runs from now on."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"MONITOR\r\n")
    assert await reader.readline() == b"+OK\r\n"
    return reader, writer


async def _logged(reader: asyncio.StreamReader, quiet: float = 0.5) -> bytes:
    """What the monitor has sent, up to the first `quiet` seconds without more."""
    logged = b""
    while chunk := await _read_within(reader, quiet):
        logged += chunk
    return logged


async def _read_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    try:
        return await asyncio.wait_for(reader.read(65536), seconds)
    except TimeoutError:
        return b""


async def test_refused_reads_do_not_each_ask_redis(
    hub_node: NodeFactory, redis_server: RedisServer
) -> None:
    node = hub_node("a", redis_server.url, read_rate=2)
    reader, writer = await _monitor(redis_server.port)
    try:
        admitted = _admitted(await _flood(node.port, PRESENCE, token("dashboard", "greedy")))
        logged = (await _logged(reader)).splitlines()
    finally:
        writer.close()
    # The script's own commands name the bucket too, logged as from "lua".
    asked = sum(b'"hub:rl:reads:' in line and b" lua]" not in line for line in logged)
    # Each read let through takes one question, and the next read one more to learn how
    # long the wait is; the reads refused meanwhile ask nothing.
    assert asked <= 3 * admitted + 3, (asked, admitted)


@pytest.mark.parametrize("with_redis", [False, True])
async def test_presence_pages_list_every_member_once_in_order(
    hub_node: NodeFactory, request: pytest.FixtureRequest, with_redis: bool
) -> None:
    redis_url = request.getfixturevalue("redis_server").url if with_redis else None
    node = hub_node("a", redis_url)
    subs = [f"p{n}" for n in (3, 0, 4, 1, 2)]
    clients = [await Client.connect(node, token("device", sub)) for sub in subs]
    operator = token("operator", "o")
    await eventually(lambda: len(node.presence("devices", operator)) == 5, 10, "presence")
    listed: list[str] = []
    after: str | None = None
    while True:
        params = {"limit": "2", **({"after": after} if after else {})}
        body = node.get(PRESENCE, operator, **params).json()
        listed += [member["sub"] for member in body["members"]]
        if (after := body["next"]) is None:
            break
    assert listed == sorted(subs)
    for client in clients:
        await client.close()


async def test_a_page_of_a_large_room_builds_only_its_members(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running() as hub:
        presence, key = hub.parts.presence, RoomKey("acme", "lobby")
        everyone = [
            Present(conn=f"c{n}", sub=f"s{n:05d}", role=Role.DASHBOARD, tenant="acme")
            for n in range(20000)
        ]
        for present in everyone:
            await presence.connect(present, [key])
        presence.leave(everyone[101], key)
        built = 0
        member = Present.member

        def counted(present: Present, node: str, room: RoomKey) -> dict[str, object]:
            nonlocal built
            built += 1
            return member(present, node, room)

        monkeypatch.setattr(Present, "member", counted)
        page = await presence.members(key, ("s00099", "c99"), 3)
        assert [listed["sub"] for listed in page] == ["s00100", "s00102", "s00103"]
        assert built == 3
