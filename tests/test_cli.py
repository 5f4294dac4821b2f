"""The command line: `hub serve` flags and refusals, `hub token`, `hub --version`, and what
a node run without `hub serve` says. Every refusal is one line on stderr and exit 2."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

import hub
from hub import cli
from hub.config import Settings
from tests.support import HTTP, SECRET, START_TIMEOUT, HubNode, free_port, token, wait_until

FAILS_WITHIN = 10
"""A command that refuses does so before anything starts: well within this, in seconds."""


def clean_env(**env: str) -> dict[str, str]:
    """This environment without the variables the hub reads, plus `env`."""
    kept = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith("HUB_") and key.upper() != "PORT"
    }
    return {**kept, **env}


def run_hub(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`hub *args` as `python -m hub` runs it (`hub.cli.main`), in this process, for a command
    that ends by itself: a refusal, a token, the help. A process of its own was most of each
    such test's time, and a refusal comes before anything a process would add;
    `test_a_refusal_is_exit_status_2_of_the_process` holds the process to the same. Logs stay
    as they are only for text logs: a test of JSON logs runs a process."""
    out, err = io.StringIO(), io.StringIO()
    status = 0
    with _environ(clean_env(**env)), redirect_stdout(out), redirect_stderr(err):
        try:
            cli.main(list(args))
        except SystemExit as exit:
            status = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    return subprocess.CompletedProcess(["hub", *args], status, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """`os.environ` is `env` for the time of the block."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def refusal(*args: str, **env: str) -> list[str]:
    """The lines `hub` writes to stderr when it refuses: exit status 2, no traceback, no
    pydantic framing, and the reason as the last line (warnings may come before it)."""
    return refusal_of(run_hub(*args, **env))


def refusal_of(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 2, (result.returncode, result.stderr)
    for framing in ("Traceback", "Value error, ", "validation error for"):
        assert framing not in result.stderr
    lines = result.stderr.splitlines()
    assert lines, "no reason given"
    assert all(line.startswith("hub: ") for line in lines), lines
    return lines


def the_reason(*args: str, **env: str) -> str:
    """The one line `hub` refuses with, when that is all it writes."""
    lines = refusal(*args, **env)
    assert len(lines) == 1, lines
    return lines[0]


@contextlib.contextmanager
def taken_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as holder:
        holder.bind((host, 0))
        holder.listen()
        yield holder.getsockname()[1]


def accepted(port: int, *args: str, **env: str) -> list[str]:
    """Run `hub serve` on a port already taken, to see settings through to the last check
    before the node starts: the lines before the refusal to listen (warnings)."""
    *before, last = refusal("serve", "--port", str(port), *args, **env)
    assert last == f"hub: cannot listen on 127.0.0.1:{port}: address already in use", last
    return before


def test_a_refusal_is_exit_status_2_of_the_process() -> None:
    """The command as a process refuses as `run_hub` sees it in this one."""
    command = [sys.executable, "-m", "hub", "serve", "--workers", "2"]
    result = subprocess.run(
        command,
        env=clean_env(HUB_JWT_SECRET=SECRET),
        capture_output=True,
        text=True,
        timeout=FAILS_WITHIN,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    expected = "hub: --workers > 1 needs HUB_REDIS_URL: workers share rooms through Redis\n"
    assert result.stderr == expected


def test_serve_help_lists_every_setting() -> None:
    result = run_hub("serve", "--help")
    assert result.returncode == 0
    for name in Settings.model_fields:
        assert f"HUB_{name.upper()}" in result.stdout
    assert "PORT too" in result.stdout


def test_version_prints_the_package_version() -> None:
    result = run_hub("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"hub {hub.__version__}"


def test_token_prints_a_jwt_with_the_claims_asked_for() -> None:
    result = run_hub(
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


def test_an_admin_token_needs_no_tenant() -> None:
    result = run_hub("token", "--role", "admin", "--sub", "root", HUB_JWT_SECRET=SECRET)
    assert result.returncode == 0, result.stderr
    assert "tenant" not in jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])


def test_token_without_a_secret_says_so() -> None:
    reason = the_reason("token", "--role", "device", "--sub", "p1", "--tenant", "acme")
    assert reason == "hub: set HUB_JWT_SECRET to sign tokens"


def test_token_refuses_a_short_secret_as_the_hub_does() -> None:
    args = ("--role", "device", "--sub", "p1", "--tenant", "acme")
    minting = the_reason("token", *args, HUB_JWT_SECRET="short")
    serving = the_reason("serve", HUB_JWT_SECRET="short")
    assert minting == serving
    assert "HUB_JWT_SECRET must be at least 32 bytes" in minting


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role", "device", "--sub", "p1"], "claim 'tenant' is required"),
        (
            ["--role", "operator", "--sub", "p1", "--tenant", "ac me"],
            "claim 'tenant' must match ^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$",
        ),
        (
            ["--role", "device", "--sub", "p1", "--tenant", "acme", "--loc", "the lobby"],
            "claims make an invalid room name 'location:the lobby'",
        ),
        (
            ["--role", "device", "--sub", "p1", "--tenant", "acme", "--group", "a/b"],
            "claims make an invalid room name 'group:a/b'",
        ),
        (
            ["--role", "device", "--sub", "p 1", "--tenant", "acme"],
            "claims make an invalid room name 'device:p 1'",
        ),
        (
            ["--role", "dashboard", "--sub", "p\x01", "--tenant", "acme"],
            "claim 'sub' must be 1 to 256 characters, none of them a control",
        ),
        (["--role", "dashboard", "--sub", "", "--tenant", "acme"], "claim 'sub' is required"),
    ],
)
def test_token_refuses_what_the_hub_would_refuse(args: list[str], message: str) -> None:
    reason = the_reason("token", *args, HUB_JWT_SECRET=SECRET)
    assert reason == f"hub: the hub would refuse this token: {message}"


def test_token_refuses_with_the_message_the_hub_gives(refusing: HubNode) -> None:
    answer = refusing.get("/v1/stats", token("device", "p1", loc="the lobby"))
    assert answer.status_code == 403
    hubs = answer.json()["error"]["message"]
    args = ["--role=device", "--sub=p1", "--tenant=acme", "--loc=the lobby"]
    assert the_reason("token", *args, HUB_JWT_SECRET=SECRET).endswith(f": {hubs}")


@pytest.mark.parametrize("ttl", ["0", "-5", "nan", "inf", "soon"])
def test_token_refuses_a_ttl_that_is_not_a_positive_number(ttl: str) -> None:
    result = run_hub(
        "token", "--role", "device", "--sub", "p1", "--tenant", "acme", f"--ttl={ttl}",
        HUB_JWT_SECRET=SECRET,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"argument --ttl: {ttl!r} is not a positive number of seconds" in result.stderr


def test_serve_without_a_key_refuses_to_start() -> None:
    reason = the_reason("serve")
    assert reason.startswith("hub: set HUB_JWT_SECRET (HS256)")


def test_serve_with_workers_needs_redis() -> None:
    reason = the_reason("serve", "--workers", "2", HUB_JWT_SECRET=SECRET)
    assert reason == "hub: --workers > 1 needs HUB_REDIS_URL: workers share rooms through Redis"


def test_serve_refuses_timeouts_that_cannot_keep_the_liveness_promises() -> None:
    short = the_reason("serve", HUB_JWT_SECRET=SECRET, HUB_HEARTBEAT_TIMEOUT="10")
    assert short == "hub: HUB_HEARTBEAT_TIMEOUT must be longer than HUB_HEARTBEAT_INTERVAL"
    slow = the_reason(
        "serve",
        HUB_JWT_SECRET=SECRET,
        HUB_REDIS_URL="redis://127.0.0.1:1/0",
        HUB_HEARTBEAT_TIMEOUT="20",
        HUB_NODE_TTL="30",
    )
    assert slow.startswith("hub: HUB_NODE_TTL is too long")


def test_serve_refuses_a_port_in_use_before_the_node_starts() -> None:
    with taken_port() as port:
        result = run_hub("serve", "--port", str(port), HUB_JWT_SECRET=SECRET)
    assert result.returncode == 2
    assert result.stderr == f"hub: cannot listen on 127.0.0.1:{port}: address already in use\n"


def test_serve_refuses_a_host_it_cannot_resolve() -> None:
    reason = the_reason("serve", "--host", "no such host", HUB_JWT_SECRET=SECRET)
    assert reason.startswith("hub: cannot listen on no such host:8000: ")


def test_hub_host_and_hub_port_are_where_serve_listens() -> None:
    with taken_port("127.0.0.2") as port:
        reason = the_reason(
            "serve", HUB_JWT_SECRET=SECRET, HUB_HOST="127.0.0.2", HUB_PORT=str(port)
        )
    assert reason == f"hub: cannot listen on 127.0.0.2:{port}: address already in use"


def test_port_is_where_serve_listens_unless_hub_port_is_set() -> None:
    with taken_port() as port:
        accepted(port, HUB_JWT_SECRET=SECRET)  # the flag
        assert accepted_without_flag(port, PORT=str(port)) == []
        assert accepted_without_flag(port, PORT="1", HUB_PORT=str(port)) == []


def accepted_without_flag(port: int, **env: str) -> list[str]:
    *before, last = refusal("serve", HUB_JWT_SECRET=SECRET, **env)
    assert last == f"hub: cannot listen on 127.0.0.1:{port}: address already in use", last
    return before


def test_the_flags_win_over_the_environment() -> None:
    with taken_port() as port:
        accepted(port, "--host", "127.0.0.1", HUB_JWT_SECRET=SECRET, HUB_HOST="127.0.0.2")
        accepted(port, HUB_JWT_SECRET=SECRET, HUB_PORT="1", PORT="2")


@pytest.mark.parametrize(
    ("variable", "value"), [("HUB_PORT", "tcp://10.0.0.1:8000"), ("PORT", "x")]
)
def test_a_port_that_is_not_a_number_is_named(variable: str, value: str) -> None:
    reason = the_reason("serve", HUB_JWT_SECRET=SECRET, **{variable: value})
    assert reason.startswith(f"hub: {variable}: Input should be a valid integer")


def test_serve_listens_on_hub_port() -> None:
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="hub-port-", suffix=".log")[1])
    env = clean_env(HUB_JWT_SECRET=SECRET, HUB_PORT=str(port), PORT="1", HUB_UNREADY_SECONDS="0")
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "hub", "serve"], env=env, stderr=out)
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), START_TIMEOUT, "/healthz")
    finally:
        process.terminate()
        process.wait(timeout=15)


def _answers(url: str) -> bool:
    try:
        return HTTP.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


class PlainUvicorn(HubNode):
    """A node run by plain `uvicorn --factory hub.app:create_app`, without hub's protocol."""

    def start(self, ready: bool = False) -> None:
        command = [sys.executable, "-m", "uvicorn", "--factory", "hub.app:create_app"]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(lambda: self._status("/healthz") == 200, START_TIMEOUT, "uvicorn")


@pytest.fixture
def plain_uvicorn() -> Iterator[HubNode]:
    node = PlainUvicorn("plain")
    try:
        node.start()
        yield node
    finally:
        node.stop()


async def test_under_plain_uvicorn_sockets_close_with_1011_naming_the_ws_flag(
    plain_uvicorn: HubNode,
) -> None:
    """docs/protocol.md: 1011 is an internal error; the log says which --ws to run with."""
    headers = {"Authorization": f"Bearer {token('device', 'p1')}"}
    async with connect(plain_uvicorn.ws_url, additional_headers=headers) as ws:
        with pytest.raises(ConnectionClosedError) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1011
    assert "uvicorn --ws hub.transport:HubWebSocketProtocol" in plain_uvicorn.output()
