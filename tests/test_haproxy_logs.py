"""The shipped HAProxy configurations log each request's path, never its query string:
browsers put their token there (`/v1/ws?token=...`), and a token in a log is a token any
reader of the log can use.

Both files run here as shipped, in front of one node, with only what cannot be the same on
this machine replaced: the listening ports, the certificate (deploy/haproxy-tls.cfg, as
tests/test_tls.py does), the nodes' addresses, and in deploy/haproxy.cfg the connection
limit (sized for a container's open-file limit) and Docker's DNS, for which a loopback
address that nothing answers on stands in.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from tests.conftest import NodeFactory
from tests.support import HubNode, ShippedProxy, eventually, free_port, token
from tests.test_tls import TLSProxy

ROOT = Path(__file__).resolve().parent.parent
PLAIN = ROOT / "deploy" / "haproxy.cfg"
SECRET_QUERY = "not-for-logs-4f1c"
"""What a request's query string carries here, besides a real token: it must not be logged."""


class Proxy(Protocol):
    url: str
    ws_url: str
    log: Path

    def start(self) -> None: ...

    def stop(self) -> None: ...


class PlainProxy(ShippedProxy):
    """HAProxy started with deploy/haproxy.cfg in front of `node`, its log in a file."""

    def __init__(self, node: HubNode, directory: Path) -> None:
        super().__init__(directory, "http", "haproxy.cfg")
        self.config.write_text(_configured(PLAIN.read_text(), self.port, node.port))


def _configured(template: str, port: int, node_port: int) -> str:
    """deploy/haproxy.cfg listening on loopback ports, every server the one node, within
    this machine's open-file limit, and a loopback name server instead of the container's."""
    replaced = {
        "bind :8000": f"bind 127.0.0.1:{port}",
        "bind :8404": f"bind 127.0.0.1:{free_port()}",
        "parse-resolv-conf": f"nameserver loopback 127.0.0.1:{free_port()}",
        "maxconn 100000": "maxconn 4096",  # the open files this machine allows
    }
    text = template
    for shipped, here in replaced.items():
        assert text.count(shipped) == 1, shipped
        text = text.replace(shipped, here)
    text, servers = re.subn(
        r"^(\s*server\s+\S+\s+)\S+:8000$", rf"\g<1>127.0.0.1:{node_port}", text, flags=re.M
    )
    assert servers == 3
    return text


@pytest.fixture(params=["haproxy.cfg", "haproxy-tls.cfg"])
def proxy(
    request: pytest.FixtureRequest, hub_node: NodeFactory, tmp_path: Path
) -> Iterator[tuple[Proxy, ssl.SSLContext | None]]:
    node = hub_node("a")
    started: Proxy
    context: ssl.SSLContext | None = None
    if request.param == "haproxy.cfg":
        started = PlainProxy(node, tmp_path)
    else:
        tls = TLSProxy([node], tmp_path)
        started, context = tls, tls.context
    started.start()
    try:
        yield started, context
    finally:
        started.stop()


async def test_a_token_in_the_query_string_never_reaches_haproxys_log(
    proxy: tuple[Proxy, ssl.SSLContext | None],
) -> None:
    server, context = proxy
    bearer = token("dashboard", "browser")
    verify: ssl.SSLContext | bool = context if context is not None else True
    async with httpx.AsyncClient(verify=verify) as http:
        plain = await http.get(f"{server.url}/v1/ws?token={SECRET_QUERY}")
        assert plain.status_code == 401
        stats = await http.get(f"{server.url}/v1/stats?token={SECRET_QUERY}")
        assert stats.status_code == 401
    async with connect(f"{server.ws_url}?token={bearer}", ssl=context) as ws:
        welcome = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert welcome["type"] == "welcome"

    def logged() -> bool:  # a socket's line is written when it closes
        lines = server.log.read_text(errors="replace")
        return len(re.findall(r'"GET /v1/(ws|stats)[? ]', lines)) == 3

    await eventually(logged, 10, "haproxy to log the three requests")
    log = server.log.read_text(errors="replace")
    for secret in (bearer, SECRET_QUERY, "token="):
        assert secret not in log
    assert log.count('"GET /v1/ws HTTP/1.1"') == 2
    assert re.search(r' 101 .*"GET /v1/ws HTTP/1.1"', log)  # the socket's line
