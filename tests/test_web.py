"""The browser side as HTTP sees it: the files every node serves, and CORS for REST
(`HUB_CORS_ORIGINS`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from hub.config import Settings, problems
from hub.web import WEB
from tests.conftest import NodeFactory
from tests.support import SECRET, HubNode, token

OPERATOR = token("operator", "o1")
ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "https://ops.example.com"


def test_the_client_module_is_served_to_any_page(refusing: HubNode) -> None:
    answer = httpx.get(f"{refusing.url}/client.js", headers={"Origin": "https://kiosk.example"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/javascript")
    assert answer.headers["access-control-allow-origin"] == "*"
    assert answer.content == (WEB / "client.js").read_bytes()
    types = httpx.get(f"{refusing.url}/client.d.ts")
    assert types.content == (WEB / "client.d.ts").read_bytes()


def test_the_console_runs_nothing_from_elsewhere(refusing: HubNode) -> None:
    page = httpx.get(f"{refusing.url}/console")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["referrer-policy"] == "no-referrer"
    for asset in (WEB / "console").iterdir():
        served = httpx.get(f"{refusing.url}/console/{asset.name}")
        assert served.status_code == 200, asset.name
        assert served.content == asset.read_bytes()
        assert served.headers["content-security-policy"] == policy
    assert httpx.get(f"{refusing.url}/console/../config.py").status_code == 404


def test_without_cors_origins_a_browser_gets_no_cors_headers(refusing: HubNode) -> None:
    answer = httpx.get(
        f"{refusing.url}/v1/devices",
        headers={"Origin": ORIGIN, "Authorization": f"Bearer {OPERATOR}"},
    )
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers


def test_a_listed_origin_may_call_rest_and_others_may_not(hub_node: NodeFactory) -> None:
    node = hub_node("cors", cors_origins=f"{ORIGIN},http://localhost:3000", broadcast_rate=0)
    preflight = httpx.options(
        f"{node.url}/v1/broadcast",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert {"authorization", "content-type", "idempotency-key"} <= set(allowed.split(", "))
    sent = httpx.post(
        f"{node.url}/v1/broadcast",
        json={"room": "alerts", "event": "alert", "data": {"level": "info", "message": "hi"}},
        headers={"Origin": ORIGIN, "Authorization": f"Bearer {OPERATOR}"},
    )
    assert sent.status_code == 202
    assert sent.headers["access-control-allow-origin"] == ORIGIN
    assert "idempotent-replayed" in sent.headers["access-control-expose-headers"].lower()
    other = httpx.options(
        f"{node.url}/v1/broadcast",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers


def test_any_origin_with_a_star(hub_node: NodeFactory) -> None:
    node = hub_node("cors-any", cors_origins="*")
    answer = httpx.get(
        f"{node.url}/v1/stats",
        headers={"Origin": "https://anywhere.example", "Authorization": f"Bearer {OPERATOR}"},
    )
    assert answer.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    "origins", ["ops.example.com", "https://ops.example.com/", "https://x.example/path", "ftp://x"]
)
def test_an_origin_that_is_not_one_stops_the_node(origins: str) -> None:
    with pytest.raises(ValidationError, match="not an origin") as refused:
        Settings(jwt_secret=SECRET, cors_origins=origins)
    assert any(line.startswith("HUB_CORS_ORIGINS") for line in problems(refused.value))


def test_the_socket_url_without_an_upgrade_says_what_the_handshake_would(
    single: HubNode,
) -> None:
    url = f"{single.url}/v1/ws"
    accepted = httpx.get(url, params={"token": token("device", "p1")})
    assert accepted.json() == {"accepted": True, "node": "solo"}
    assert accepted.headers["access-control-allow-origin"] == "*"
    refused = httpx.get(url, params={"token": token("device", "p1", secret="x" * 40)})
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthorized"
    assert refused.headers["access-control-allow-origin"] == "*"
    assert httpx.get(url).status_code == 401
    assert httpx.get(f"{single.url}/healthz").headers["access-control-allow-origin"] == "*"


def test_the_client_types_describe_what_a_page_writes() -> None:
    """A player page written in TypeScript against client.d.ts compiles under --strict,
    and the module's own JSDoc types check: editors complete what the client really takes."""
    tsc = ROOT / "tests" / "web" / "node_modules" / ".bin" / "tsc"
    if not tsc.exists():
        message = "TypeScript is not installed in tests/web (run scripts/install)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    web = ROOT / "tests" / "web"
    subprocess.run([str(tsc), "-p", str(web / "tsconfig.json")], check=True, timeout=120)
    checked = [str(tsc), "--allowJs", "--checkJs", "--noEmit", "--target", "ES2022"]
    checked += ["--module", "ES2022", "--lib", "ES2022,DOM", str(WEB / "client.js")]
    subprocess.run(checked, check=True, timeout=120)
