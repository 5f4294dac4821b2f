"""TLS ends at the load balancer: deploy/haproxy-tls.cfg, the configuration docs/operations.md
shows, runs here in front of two nodes with a certificate made by the test. wss:// sockets
and https:// broadcasts go through it to both nodes, and a draining node gets no new sockets.

Only what cannot be the same here is replaced in the file: the listening port, the
certificate's path and the nodes' addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from cryptography import x509
from websockets.asyncio.client import connect

from tests.certificates import self_signed
from tests.conftest import NodeFactory
from tests.support import (
    Client,
    HubNode,
    RedisServer,
    ShippedProxy,
    eventually,
    free_port,
    required,
    token,
    unmeasured_env,
)

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "deploy" / "haproxy-tls.cfg"
OPERATIONS = ROOT / "docs" / "operations.md"
SERVER = re.compile(r"\s*server\s+\S+\s+\S+\s*$")


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: the file clients trust, and the one HAProxy
    serves (the certificate followed by its key)."""
    address = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    cert_pem, key_pem = self_signed("hub test", address)
    trusted, served = directory / "cert.pem", directory / "haproxy.pem"
    trusted.write_bytes(cert_pem)
    served.write_bytes(cert_pem + key_pem)
    return trusted, served


def _configured(template: str, port: int, served: Path, nodes: list[tuple[str, int]]) -> str:
    """The deployed configuration with this machine's port, certificate and (name, port)
    nodes in place of the example's."""
    bind = "bind :443 ssl crt /path/cert.pem"
    assert template.count(bind) == 1, "the documented bind line"
    lines = template.replace(bind, f"bind 127.0.0.1:{port} ssl crt {served}").splitlines(True)
    servers = [i for i, line in enumerate(lines) if SERVER.match(line)]
    assert servers == list(range(servers[0], servers[0] + len(servers))), "one block"
    indent = lines[servers[0]][: -len(lines[servers[0]].lstrip())]
    lines[servers[0] : servers[-1] + 1] = [
        f"{indent}server {name} 127.0.0.1:{node_port}\n" for name, node_port in nodes
    ]
    text = "".join(lines)
    # The example's private addresses must all be gone: nothing here may be sent to them.
    addresses = set(re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", text))
    assert addresses == {"127.0.0.1"}, addresses
    return text


class TLSProxy(ShippedProxy):
    """HAProxy started with deploy/haproxy-tls.cfg in front of `nodes`."""

    def __init__(self, nodes: list[HubNode], directory: Path) -> None:
        super().__init__(directory, "https", "haproxy-tls.cfg")
        trusted, served = _certificate(directory)
        self.context_file = str(trusted)
        self.context = ssl.create_default_context(cafile=self.context_file)
        servers = [(node.name, node.port) for node in nodes]
        self.config.write_text(_configured(CONFIG.read_text(), self.port, served, servers))

    def healthy(self) -> bool:
        answer = httpx.get(self.url + "/healthz", verify=self.context, timeout=1.0)
        return answer.status_code == 200

    async def socket(self, bearer: str) -> Client:
        """A wss:// socket through the proxy, past its welcome."""
        ws = await connect(
            self.ws_url,
            ssl=self.context,
            additional_headers={"Authorization": f"Bearer {bearer}"},
            compression=None,
        )
        welcome = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert welcome["type"] == "welcome", welcome
        return Client(ws, welcome)


@pytest.fixture
def drain_pair(hub_node: NodeFactory, redis_server: RedisServer) -> list[HubNode]:
    """Two nodes whose drain lasts long enough to watch the proxy route around one."""
    return [hub_node(name, redis_server.url, drain_seconds=20) for name in ("a", "b")]


@pytest.fixture
def proxy(drain_pair: list[HubNode], tmp_path: Path) -> Iterator[TLSProxy]:
    started = TLSProxy(drain_pair, tmp_path)
    started.start()
    try:
        yield started
    finally:
        started.stop()


def test_the_operations_guide_shows_the_configuration_these_tests_run() -> None:
    blocks = re.findall(r"```haproxy\n(.*?)```", OPERATIONS.read_text(), re.DOTALL)
    assert blocks == [CONFIG.read_text()]


def test_haproxy_accepts_the_tls_configuration_without_a_warning(tmp_path: Path) -> None:
    _, served = _certificate(tmp_path)
    nodes = [("a", free_port()), ("b", free_port())]  # nothing listens: only checked
    config = tmp_path / "haproxy-tls.cfg"
    config.write_text(_configured(CONFIG.read_text(), free_port(), served, nodes))
    result = subprocess.run(
        [required("haproxy"), "-c", "-f", str(config)],
        env=unmeasured_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Configuration file is valid" in output
    assert "[WARNING]" not in output, output
    assert "[ALERT]" not in output, output


def test_the_configuration_upgrades_websockets_checks_readyz_and_keeps_sockets_open() -> None:
    config = CONFIG.read_text()
    for line in (
        r"mode\s+http",  # HAProxy passes the HTTP/1.1 upgrade on, then tunnels
        r"timeout\s+tunnel\s+1h",
        r"http-check\s+send\s+meth\s+GET\s+uri\s+/readyz",
        r"default-server\s+check",
        r"http-request\s+set-header\s+X-Forwarded-Proto\s+https",
        r"ssl-default-bind-options\s+ssl-min-ver\s+TLSv1\.2",
    ):
        assert re.search(rf"^\s*{line}\b", config, re.MULTILINE), line


async def test_wss_sockets_and_https_broadcasts_reach_both_nodes_through_haproxy(
    proxy: TLSProxy, drain_pair: list[HubNode]
) -> None:
    players = [await proxy.socket(token("device", f"player-{n}")) for n in range(6)]
    welcomed_by = {player.welcome["node"] for player in players}
    assert welcomed_by == {"a", "b"}  # leastconn spread the held sockets

    operator = token("operator", "ops")

    def each_node_counts_its_share() -> bool:
        counts = [
            node.get("/v1/stats", operator).json()["node"]["connections"]["device"]
            for node in drain_pair
        ]
        return sum(counts) == len(players) and all(counts)

    await eventually(each_node_counts_its_share, 10, "both nodes to count their sockets")

    async with httpx.AsyncClient(base_url=proxy.url, verify=proxy.context) as http:
        answer = await http.post(
            "/v1/broadcast",
            json={"room": "devices", "event": "command", "data": {"name": "reboot"}},
            headers={"Authorization": f"Bearer {operator}"},
        )
    assert answer.status_code == 202, answer.text
    (event_id,) = answer.json()["ids"].values()
    for player in players:
        [event] = await player.events(lambda seen: bool(seen), timeout=5)
        assert (event["event"], event["data"], event["id"]) == (
            "command",
            {"name": "reboot"},
            event_id,
        )
        await player.close()


def test_clients_offered_http2_get_http1_the_upgrade_every_websocket_client_speaks(
    proxy: TLSProxy,
) -> None:
    context = ssl.create_default_context(cafile=proxy.context_file)
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as plain,
        context.wrap_socket(plain, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.selected_alpn_protocol() == "http/1.1"


async def test_a_draining_node_gets_no_new_sockets_through_haproxy(
    proxy: TLSProxy, drain_pair: list[HubNode]
) -> None:
    a, _ = drain_pair
    # Sockets held on `a` keep it draining (one close every 2 s) after SIGTERM.
    held = [await Client.connect(a, token("dashboard", f"held-{n}")) for n in range(10)]
    a.signal(signal.SIGTERM)  # /readyz answers 503 at once

    async def new_sockets_all_go_to_b() -> bool:
        # Held open together, so that leastconn would hand some to `a` were it still up.
        bearers = [token("dashboard", f"new-{n}") for n in range(4)]
        clients = await asyncio.gather(
            *(proxy.socket(bearer) for bearer in bearers), return_exceptions=True
        )
        nodes = []
        for client in clients:
            if isinstance(client, Client):
                nodes.append(client.welcome["node"])
                await client.close()
            else:
                nodes.append(None)
        return nodes == ["b"] * len(bearers)

    await eventually(new_sockets_all_go_to_b, 10, "haproxy to take the draining node out")
    assert a.process is not None
    assert a.process.poll() is None, "the node is still draining, not gone"
    for client in held:
        await client.ws.close()
