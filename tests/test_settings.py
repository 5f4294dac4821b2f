"""Settings never crash `hub serve`: each bad one is one line naming the variable and exit
2, a misspelt one is a warning, and what the node runs with is one line at start."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hub.config import NODE_LOST_GRACE, Keepalive, Settings
from tests.conftest import NodeFactory
from tests.support import SECRET, HubNode, free_port
from tests.test_cli import (
    FAILS_WITHIN,
    accepted,
    clean_env,
    refusal_of,
    taken_port,
    the_reason,
)


def _settings(**values: Any) -> Settings:
    return Settings(jwt_secret=SECRET, **values)


def _serve(**env: str) -> str:
    return the_reason("serve", HUB_JWT_SECRET=SECRET, **env)


@pytest.fixture
def port() -> Iterator[int]:
    """A port something else listens on: `hub serve` on it checks everything, then stops."""
    with taken_port() as taken:
        yield taken


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("localhost:6379", "must start with redis://, rediss:// or unix://"),
        ("http://localhost:6379", "must start with redis://, rediss:// or unix://"),
        ("redis://localhost:port/0", "is not a Redis URL: Port could not be cast"),
        ("redis://localhost:6379/0?db=zero", "is not a Redis URL: Invalid value for 'db'"),
    ],
)
def test_a_redis_url_that_is_not_one_is_refused(url: str, reason: str) -> None:
    assert _serve(HUB_REDIS_URL=url).startswith(f"hub: HUB_REDIS_URL: {reason}")


@pytest.mark.parametrize(
    ("rules", "reason"),
    [
        ("status=100", ": Invalid JSON: expected value at line 1 column 1"),
        ('["status"]', ": Input should be a JSON object"),
        ('{"status": 100}', '["status"]: Input should be a JSON object'),
        ('{"status": {"size": "100"}}', '["status"]["size"]: Input should be a valid integer'),
        ('{"status": {"size": 1.5}}', '["status"]["size"]: Input should be a valid integer'),
        ('{"status": {"size": -1}}', '["status"]["size"]: Input should be greater than or'),
        ('{"status": {"ttl": "600"}}', '["status"]["ttl"]: Input should be a valid number'),
        ('{"status": {"ttl": true}}', '["status"]["ttl"]: Input should be a valid number'),
        ('{"status": {"ttl": -600}}', '["status"]["ttl"]: Input should be greater than 0'),
        ('{"status": {"sise": 100}}', '["status"]["sise"]: Extra inputs are not permitted'),
    ],
)
def test_bad_history_rooms_are_refused_at_start(rules: str, reason: str) -> None:
    assert _serve(HUB_HISTORY_ROOMS=rules).startswith(f"hub: HUB_HISTORY_ROOMS{reason}")


def test_history_rules_override_the_default_by_longest_prefix() -> None:
    rules = '{"status": {"size": 100}, "device:": {"ttl": 60}, "device:kiosk": {"size": 0}}'
    retention = _settings(history_size=1000, history_ttl=3600, history_rooms=rules).retention
    assert (retention.for_room("status").size, retention.for_room("status").ttl) == (100, 3600)
    assert (retention.for_room("device:a").size, retention.for_room("device:a").ttl) == (1000, 60)
    assert retention.for_room("device:kiosk-1").size == 0
    assert retention.for_room("location:x") == retention.default


def test_valid_history_rooms_start_the_node(port: int) -> None:
    assert accepted(port, HUB_JWT_SECRET=SECRET, HUB_HISTORY_ROOMS='{"status": {"ttl": 60}}') == []


@pytest.mark.parametrize("variable", ["HUB_HISTORY_TTL", "HUB_HEARTBEAT_TIMEOUT"])
def test_an_infinite_number_of_seconds_is_refused(variable: str) -> None:
    assert _serve(**{variable: "inf"}) == f"hub: {variable}: Input should be a finite number"


def test_an_unknown_log_level_is_refused() -> None:
    assert _serve(HUB_LOG_LEVEL="verbose") == (
        "hub: HUB_LOG_LEVEL: Input should be 'critical', 'error', 'warning', 'info', "
        "'debug' or 'trace'"
    )


def test_the_log_level_is_read_in_any_case(port: int) -> None:
    assert accepted(port, HUB_JWT_SECRET=SECRET, HUB_LOG_LEVEL="WARNING") == []


def _ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _public_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_a_public_key_that_is_neither_pem_nor_a_file_is_refused(tmp_path: Path) -> None:
    missing = _serve(HUB_JWT_PUBLIC_KEY=str(tmp_path / "missing.pem"))
    assert missing == (
        "hub: HUB_JWT_PUBLIC_KEY is neither PEM text (-----BEGIN PUBLIC KEY-----) nor a "
        "readable file (No such file or directory)"
    )
    folder = _serve(HUB_JWT_PUBLIC_KEY=str(tmp_path))
    assert folder.endswith("nor a readable file (Is a directory)")
    os.mkfifo(tmp_path / "fifo")
    assert _serve(HUB_JWT_PUBLIC_KEY=str(tmp_path / "fifo")).endswith("nor a regular file")


def test_a_public_key_file_without_a_pem_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a key\n")
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00")
    assert _serve(HUB_JWT_PUBLIC_KEY=str(tmp_path / "notes.txt")) == (
        "hub: HUB_JWT_PUBLIC_KEY holds no PEM block (-----BEGIN PUBLIC KEY-----)"
    )
    assert _serve(HUB_JWT_PUBLIC_KEY=str(tmp_path / "binary")) == (
        "hub: HUB_JWT_PUBLIC_KEY names a file that is not PEM text"
    )


def test_a_private_key_is_refused_as_no_public_key(tmp_path: Path) -> None:
    private = _ec_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "private.pem").write_bytes(private)
    reason = _serve(HUB_JWT_PUBLIC_KEY=str(tmp_path / "private.pem"))
    assert reason.startswith("hub: HUB_JWT_PUBLIC_KEY key 1 is not a PEM public key")


def test_a_public_key_as_text_or_file_starts_the_node(port: int, tmp_path: Path) -> None:
    pem = _public_pem(_ec_key())
    (tmp_path / "public.pem").write_text(pem)
    assert accepted(port, HUB_JWT_PUBLIC_KEY=pem) == []
    assert accepted(port, HUB_JWT_PUBLIC_KEY=str(tmp_path / "public.pem")) == []


def test_a_short_hs256_secret_is_refused_at_start() -> None:
    assert the_reason("serve", HUB_JWT_SECRET="short") == (
        "hub: HUB_JWT_SECRET must be at least 32 bytes (RFC 7518 section 3.2): anyone who "
        "guesses it mints admin tokens"
    )


def test_every_problem_is_a_line_of_its_own() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hub", "serve"],
        env=clean_env(HUB_JWT_SECRET=SECRET, HUB_MAX_CONNECTIONS="many", HUB_LOG_LEVEL="loud"),
        capture_output=True,
        text=True,
        timeout=FAILS_WITHIN,
    )
    lines = refusal_of(result)
    assert len(lines) == 2
    assert any(line.startswith("hub: HUB_MAX_CONNECTIONS: ") for line in lines)
    assert any(line.startswith("hub: HUB_LOG_LEVEL: ") for line in lines)


def test_a_misspelt_variable_is_a_warning_naming_the_setting(port: int) -> None:
    warnings = accepted(
        port,
        HUB_JWT_SECRET=SECRET,
        HUB_REDIS_ULR="redis://127.0.0.1:6379/0",
        HUB_TOKEN="for hub listen",
        HUB_ZZZ="1",
    )
    assert warnings == [
        "hub: warning: HUB_REDIS_ULR is not a setting; did you mean HUB_REDIS_URL?",
        "hub: warning: HUB_ZZZ is not a setting",
    ]


def test_a_misspelt_secret_is_named_when_the_key_is_missing() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hub", "serve"],
        env=clean_env(HUB_JWT_SECRT=SECRET),
        capture_output=True,
        text=True,
        timeout=FAILS_WITHIN,
    )
    first, last = refusal_of(result)
    assert first == "hub: warning: HUB_JWT_SECRT is not a setting; did you mean HUB_JWT_SECRET?"
    assert last.startswith("hub: set HUB_JWT_SECRET")


def test_a_short_heartbeat_timeout_shortens_the_default_node_ttl(port: int) -> None:
    settings = _settings(redis_url="redis://x", heartbeat_interval=1, heartbeat_timeout=3)
    assert settings.node_ttl == 11.9
    assert settings.node_death_bound <= settings.heartbeat_timeout + NODE_LOST_GRACE
    assert _settings(redis_url="redis://x").node_ttl == 15
    env = {"HUB_HEARTBEAT_INTERVAL": "1", "HUB_HEARTBEAT_TIMEOUT": "3"}
    redis = {"HUB_REDIS_URL": "redis://127.0.0.1:1/0"}
    assert accepted(port, HUB_JWT_SECRET=SECRET, **env, **redis) == []
    too_long = _serve(**env, **redis, HUB_NODE_TTL="15")
    assert too_long.startswith("hub: HUB_NODE_TTL is too long")


@pytest.mark.parametrize("timeout", [0.01, 0.5, 3, 6.99, 7, 45, 1e9])
def test_the_default_node_ttl_always_keeps_the_bound(timeout: float) -> None:
    settings = _settings(
        redis_url="redis://x", heartbeat_interval=timeout / 2, heartbeat_timeout=timeout
    )
    assert 0 < settings.node_ttl <= 15
    assert settings.node_death_bound <= timeout + NODE_LOST_GRACE


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        (
            {"HUB_HEARTBEAT_MIN": "60", "HUB_HEARTBEAT_MAX": "30"},
            "HUB_HEARTBEAT_MIN must not be more than HUB_HEARTBEAT_MAX",
        ),
        ({"HUB_HEARTBEAT_MAX": "3601"}, "HUB_HEARTBEAT_MAX: Input should be less than or equal"),
        ({"HUB_HEARTBEAT_MIN": "0"}, "HUB_HEARTBEAT_MIN: Input should be greater than or equal"),
        ({"HUB_HEARTBEAT_MIN": "7.5"}, "HUB_HEARTBEAT_MIN: Input should be a valid integer"),
    ],
)
def test_heartbeat_bounds_that_cannot_be_claimed_are_refused(
    env: dict[str, str], reason: str
) -> None:
    assert _serve(**env).startswith(f"hub: {reason}")


def test_a_claimed_interval_keeps_the_nodes_ratios() -> None:
    settings = _settings(heartbeat_interval=10, heartbeat_timeout=25, ping_interval=30)
    assert settings.keepalive(4) == Keepalive(4, 10.0, 12.0)
    assert settings.keepalive(None) == Keepalive(10, 25, 30)
    default = _settings()
    assert default.keepalive(240) == Keepalive(240, 720.0, 320.0)
    assert (default.shortest_heartbeat_timeout, default.longest_heartbeat_timeout) == (15, 900)


def test_the_nodes_own_interval_need_not_be_one_a_token_may_claim() -> None:
    settings = _settings(heartbeat_interval=3000, heartbeat_timeout=6000)
    assert settings.heartbeat_bounds == (5, 300)
    assert settings.longest_heartbeat_timeout == 6000
    assert settings.shortest_heartbeat_timeout == 10


def test_claims_leave_the_node_death_bound_to_the_nodes_own_timeout() -> None:
    """A dead node's devices are offline within HUB_HEARTBEAT_TIMEOUT + 15 s whatever they
    claim, and so within their own timeout + 15 s when they claim more than the node's
    interval: a short claim does not shorten the node TTL."""
    settings = _settings(redis_url="redis://x", heartbeat_min=1)
    assert settings.node_ttl == 15
    assert settings.node_death_bound <= settings.heartbeat_timeout + NODE_LOST_GRACE
    longest = settings.keepalive(settings.heartbeat_max).timeout
    assert settings.node_death_bound <= longest + NODE_LOST_GRACE


def test_the_start_up_line_says_what_a_lone_node_runs_with(hub_node: NodeFactory) -> None:
    node = hub_node("lone", max_connections=500)
    line = next(line for line in node.output().splitlines() if "node lone started: " in line)
    assert "in-process broker" in line
    assert "auth HS256 secret" in line
    assert "history 1000 events for 86400 s" in line
    assert "at most 500 sockets" in line
    assert SECRET not in node.output()


def test_the_start_up_line_hides_the_redis_password(tmp_path: Path) -> None:
    (tmp_path / "public.pem").write_text(_public_pem(_ec_key()))
    redis_port = free_port()  # nothing listens there: the node starts, not ready
    node = HubNode(
        "unready",
        f"redis://hub:hunter2-password@127.0.0.1:{redis_port}/0",
        jwt_public_key=str(tmp_path / "public.pem"),
        history_rooms='{"status": {"size": 10}}',
    )
    try:
        node.start(ready=False)
        output = node.output()
    finally:
        node.stop()
    line = next(line for line in output.splitlines() if "node unready started: " in line)
    assert f"Redis broker redis://hub:***@127.0.0.1:{redis_port}/0 (node TTL 15 s)" in line
    assert f"auth RS256/ES256 with PEM public keys from {tmp_path / 'public.pem'}" in line
    assert "(other rules for 1 room prefixes)" in line
    assert "hunter2" not in output
    assert SECRET not in output
