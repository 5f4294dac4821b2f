"""The command line: `hub serve --help`, `hub token`, and refusals of bad settings."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import jwt

from hub.config import Settings
from tests.support import SECRET


def _hub(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("HUB_")}
    return subprocess.run(
        [sys.executable, "-m", "hub", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_serve_help_lists_every_setting() -> None:
    result = _hub("serve", "--help")
    assert result.returncode == 0
    for name in Settings.model_fields:
        assert f"HUB_{name.upper()}" in result.stdout


def test_token_prints_a_jwt_with_the_claims_asked_for() -> None:
    result = _hub(
        "token",
        "--role",
        "device",
        "--sub",
        "p1",
        "--tenant",
        "acme",
        "--loc",
        "lobby",
        "--group",
        "g1",
        "--group",
        "g2",
        HUB_JWT_SECRET=SECRET,
    )
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "p1"
    assert claims["role"] == "device"
    assert claims["tenant"] == "acme"
    assert claims["loc"] == "lobby"
    assert claims["groups"] == ["g1", "g2"]
    assert 3500 < claims["exp"] - time.time() <= 3600


def test_token_without_a_secret_says_so() -> None:
    result = _hub("token", "--role", "device", "--sub", "p1", "--tenant", "acme")
    assert result.returncode != 0
    assert "HUB_JWT_SECRET" in result.stderr


def test_serve_without_a_key_refuses_to_start() -> None:
    result = _hub("serve", "--port", "1")
    assert result.returncode != 0
    assert "HUB_JWT_SECRET" in result.stderr


def test_serve_with_workers_needs_redis() -> None:
    result = _hub("serve", "--workers", "2", HUB_JWT_SECRET=SECRET)
    assert result.returncode != 0
    assert "HUB_REDIS_URL" in result.stderr


def test_serve_refuses_timeouts_that_cannot_keep_the_liveness_promises() -> None:
    short = _hub("serve", HUB_JWT_SECRET=SECRET, HUB_HEARTBEAT_TIMEOUT="10")
    assert short.returncode != 0
    assert "HUB_HEARTBEAT_TIMEOUT must be longer than HUB_HEARTBEAT_INTERVAL" in short.stderr
    slow = _hub(
        "serve",
        HUB_JWT_SECRET=SECRET,
        HUB_REDIS_URL="redis://127.0.0.1:1/0",
        HUB_HEARTBEAT_TIMEOUT="20",
        HUB_NODE_TTL="30",
    )
    assert slow.returncode != 0
    assert "HUB_NODE_TTL is too long" in slow.stderr


def test_a_short_hs256_secret_is_refused_at_start() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_")}
    env["HUB_JWT_SECRET"] = "short"
    result = subprocess.run(
        [sys.executable, "-m", "hub", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "at least 32 bytes" in result.stderr
