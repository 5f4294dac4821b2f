"""Open files: a node's caps on connections fit its open-file limit, so that idle peers
holding every connection they may cannot take the descriptors a health check needs."""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.config import Settings
from hub.descriptors import (
    CLUSTER_MASTERS,
    METRICS_FILES,
    PROCESS_FILES,
    REQUEST_FILES,
    Fit,
    TooFewFiles,
    files_needed,
    fit,
    reserve,
)
from tests.support import SECRET, HubNode, token
from tests.test_cli import FAILS_WITHIN, clean_env, refusal_of, taken_port

LOW = 256
"""`ulimit -n 256`: the open-file limit the issue's node ran with."""
IDLE = 400
"""Idle connections the attacker holds: more than the node's every descriptor."""
ALONE = PROCESS_FILES + REQUEST_FILES
"""What a node alone holds besides its connections."""


def _settings(**values: Any) -> Settings:
    return Settings(jwt_secret=SECRET, **values)


def test_the_defaults_fit_a_hard_limit_of_20000_with_redis_and_a_cluster() -> None:
    for settings in (
        _settings(),
        _settings(redis_url="redis://x"),
        _settings(redis_url=",".join(f"redis://x:{port}" for port in range(6)), redis_cluster=True),
    ):
        assert files_needed(settings) <= 20000
        assert fit(20000, settings) == Fit(settings)


def test_an_unlimited_process_keeps_its_settings() -> None:
    settings = _settings(max_connections=10**6)
    assert fit(None, settings) == Fit(settings)


def test_both_caps_shrink_by_the_same_factor_to_fit_beside_the_reserve() -> None:
    fitted = fit(LOW, _settings())
    caps = fitted.settings
    assert (caps.max_connections, caps.max_pending_requests) == (190, 10)
    assert caps.max_connections + caps.max_pending_requests + ALONE == LOW
    assert fitted.clamped == (
        "RLIMIT_NOFILE 256: HUB_MAX_CONNECTIONS 18000 -> 190 and HUB_MAX_PENDING_REQUESTS "
        "1000 -> 10, to fit beside the 56 other open files a node holds (24 of the process, "
        "32 for requests being answered); a limit of 19056 (ulimit -n, the container's "
        "nofile) keeps the settings"
    )


def test_the_line_names_only_what_was_lowered() -> None:
    fitted = fit(500, _settings(max_connections=1000, max_pending_requests=1))
    assert fitted.settings.max_pending_requests == 1
    assert fitted.settings.max_connections == 500 - ALONE - 1
    assert fitted.clamped is not None
    assert "HUB_MAX_CONNECTIONS 1000 -> 443," in fitted.clamped
    assert "HUB_MAX_PENDING_REQUESTS" not in fitted.clamped


@pytest.mark.parametrize("limit", [ALONE + 2, ALONE + 3, 100, 257, 1000, 19055])
@pytest.mark.parametrize(("sockets", "pending"), [(18000, 1000), (1, 1000), (5000, 1), (2, 2)])
def test_what_is_fitted_is_never_more_than_the_limit_nor_than_what_was_set(
    limit: int, sockets: int, pending: int
) -> None:
    caps = fit(limit, _settings(max_connections=sockets, max_pending_requests=pending)).settings
    assert 1 <= caps.max_connections <= sockets
    assert 1 <= caps.max_pending_requests <= pending
    assert caps.max_connections + caps.max_pending_requests + ALONE <= limit


def test_the_reserve_counts_what_a_node_opens() -> None:
    read = 32
    redis = 8 + read + 1  # writers, readers, the subscriber
    assert reserve(_settings()) == ALONE
    assert reserve(_settings(metrics_port=9100)) == ALONE + METRICS_FILES
    assert reserve(_settings(redis_url="redis://x")) == ALONE + redis
    assert reserve(_settings(redis_url="redis://x", redis_read_connections=2)) == ALONE + 11
    sentinels = _settings(redis_sentinels="10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379")
    assert reserve(sentinels) == ALONE + redis + 3
    seeds = [f"redis://x:{port}" for port in range(6)]
    one_seed = _settings(redis_url=seeds[0], redis_cluster=True)
    assert reserve(one_seed) == ALONE + redis * CLUSTER_MASTERS
    assert reserve(_settings(redis_url=",".join(seeds), redis_cluster=True)) == ALONE + redis * 6


def test_a_limit_with_no_room_for_connections_is_refused() -> None:
    assert fit(ALONE + 2, _settings()).settings.max_connections == 1
    with pytest.raises(TooFewFiles) as refused:
        fit(ALONE + 1, _settings())
    assert str(refused.value) == (
        "RLIMIT_NOFILE 57 leaves no room for connections: a node holds 56 other open files "
        "(24 of the process, 32 for requests being answered); raise the limit (ulimit -n, "
        "the container's nofile) to at least 58, or to 19056 for these settings"
    )


def _limited(soft: int, hard: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class LimitedNode(HubNode):
    """A `hub serve` process started under an open-file limit of its own."""

    def __init__(self, name: str, soft: int, hard: int, log_dir: Path, **settings: Any) -> None:
        super().__init__(name, log_dir=log_dir, **settings)
        self.soft, self.hard = soft, hard
        self.preexec = lambda: _limited(self.soft, self.hard)

    def clamp_lines(self) -> list[str]:
        return [line for line in self.output().splitlines() if "RLIMIT_NOFILE" in line]


@pytest.fixture
def low(tmp_path: Path) -> Iterator[LimitedNode]:
    """A node alone under `ulimit -n 256`, soft and hard."""
    node = LimitedNode("low", LOW, LOW, tmp_path, max_sockets_per_sub=0)
    try:
        node.start()
        yield node
    finally:
        node.stop()


def _health(node: HubNode) -> int:
    """`/healthz` through a connection of its own."""
    with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as fresh:
        return fresh.get(f"{node.url}/healthz", timeout=10).status_code


def test_idle_connections_cannot_starve_health_checks_under_a_low_open_file_limit(
    low: LimitedNode,
) -> None:
    idle = [socket.create_connection(("127.0.0.1", low.port), timeout=10) for _ in range(IDLE)]
    try:
        assert _health(low) == 200
        assert _health(low) == 200
        dropped = [raw for raw in idle[:200] if raw.recv(200).startswith(b"HTTP/1.1 408 ")]
        assert len(dropped) == 200
    finally:
        for raw in idle:
            raw.close()
    assert low.clamp_lines() == [
        "WARNING:  " + str(fit(LOW, _settings(max_sockets_per_sub=0)).clamped)
    ]
    assert "at most 190 sockets and 10 connections waiting for their headers" in low.output()


def test_connections_kept_alive_then_idle_cannot_starve_health_checks(low: LimitedNode) -> None:
    """A peer that sends one request and then nothing waits for its next request's headers:
    dropped like any other for a new connection, without an answer it did not ask for."""
    held = []
    for _ in range(IDLE):
        raw = socket.create_connection(("127.0.0.1", low.port), timeout=10)
        raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        held.append(raw)
    try:
        assert _health(low) == 200
        answer = _answer_of(held[0])
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert answer.count(b"HTTP/1.1 ") == 1
    finally:
        for raw in held:
            raw.close()


def test_a_connection_kept_alive_goes_on_serving_requests_each_bounded_on_its_own(
    low: LimitedNode,
) -> None:
    pad = b"X-Pad: " + b"p" * 8000 + b"\r\n"  # each request's headers near the 16 KiB bound
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + pad * 2 + b"\r\n"
    with socket.create_connection(("127.0.0.1", low.port), timeout=10) as raw:
        for _ in range(3):
            raw.sendall(request)
            assert _response(raw).startswith(b"HTTP/1.1 200 ")


def _response(raw: socket.socket) -> bytes:
    """One whole response, read by its content-length."""
    got = b""
    while b"\r\n\r\n" not in got:
        got += raw.recv(65536)
    head, _, body = got.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    while len(body) < length:
        body += raw.recv(65536)
    return head + b"\r\n\r\n" + body


def _answer_of(raw: socket.socket) -> bytes:
    """Everything the node sends until it closes the connection."""
    got = b""
    while chunk := raw.recv(65536):
        got += chunk
    return got


async def test_sockets_up_to_the_fitted_cap_leave_room_for_health_checks(
    low: LimitedNode,
) -> None:
    from websockets.asyncio.client import connect

    cap = fit(LOW, _settings()).settings.max_connections
    stats = httpx.get(f"{low.url}/v1/stats", headers=_admin(), timeout=10).json()
    assert stats["node"]["capacity"]["max_connections"] == cap
    device = {"Authorization": f"Bearer {token('device', 'd')}"}
    sockets = [await connect(low.ws_url, additional_headers=device) for _ in range(cap)]
    idle = [socket.create_connection(("127.0.0.1", low.port), timeout=10) for _ in range(IDLE)]
    try:
        assert _health(low) == 200
        async with connect(low.ws_url, additional_headers=device) as past_the_cap:
            await past_the_cap.wait_closed()
            assert past_the_cap.close_code == 1013
        assert _health(low) == 200
    finally:
        for raw in idle:
            raw.close()
        for ws in sockets:
            await ws.close()


def _admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {token('admin', 'root', tenant=None)}"}


def test_a_soft_limit_below_the_hard_one_is_raised_before_anything_is_lowered(
    tmp_path: Path,
) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 20000:
        pytest.skip(f"the hard open-file limit here is {hard}: the defaults need 20000")
    node = LimitedNode("raised", LOW, hard, tmp_path)
    node.start()
    try:
        assert node.clamp_lines() == []
        assert "at most 18000 sockets and 1000 connections" in node.output()
    finally:
        node.stop()


def test_serve_refuses_a_limit_with_no_room_for_connections() -> None:
    with taken_port() as port:  # were the limit let through, the node would stop there
        result = subprocess.run(
            [sys.executable, "-m", "hub", "serve", "--port", str(port)],
            env=clean_env(HUB_JWT_SECRET=SECRET),
            capture_output=True,
            text=True,
            timeout=FAILS_WITHIN,
            preexec_fn=lambda: _limited(50, 50),
        )
    assert refusal_of(result) == [
        "hub: RLIMIT_NOFILE 50 leaves no room for connections: a node holds 56 other open "
        "files (24 of the process, 32 for requests being answered); raise the limit "
        "(ulimit -n, the container's nofile) to at least 58, or to 19056 for these settings"
    ]
