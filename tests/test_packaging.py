"""`pip install .` into an empty virtualenv, with the runtime's locked dependencies, gives a
working `hub`: the distribution `signage-hub`, the command and nothing of the tests' tools."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from hub import __version__
from tests.support import HTTP, SECRET, free_port, unmeasured_env, wait_until

ROOT = Path(__file__).resolve().parent.parent
ABSENT = (
    "import importlib.util as u;"
    "print([n for n in ('pytest', 'locust', 'mypy', 'matplotlib') if u.find_spec(n)])"
)
"""Prints which of the tests' tools an interpreter has: none, for a node's own install."""
NOT_COPIED = (
    ".git",
    ".venv",
    "results",
    ".coverage-data",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    "node_modules",
)


def _healthy(port: int) -> bool:
    try:
        return HTTP.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _answers(*command: str | Path, within: float) -> None:
    """Start a node with `command` (and `--port`), see it answer /healthz, stop it."""
    port = free_port()
    node = subprocess.Popen(
        [*command, "--port", str(port)],
        env={**unmeasured_env(), "HUB_JWT_SECRET": SECRET, "HUB_UNREADY_SECONDS": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _healthy(port), within, f"{command[0]} to answer /healthz")
    finally:
        node.terminate()
        node.wait(timeout=30)


def _run(*command: str | Path) -> str:
    done = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=300,
        env=unmeasured_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_pip_install_gives_a_working_hub_and_no_development_tools(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    python, hub = venv / "bin" / "python", venv / "bin" / "hub"
    _run(
        python,
        "-m",
        "pip",
        "install",
        "-q",
        "--require-hashes",
        "-r",
        ROOT / "requirements" / "run.lock",
    )
    _run(python, "-m", "pip", "install", "-q", "--no-deps", ROOT)
    assert _run(hub, "--version").strip() == f"hub {__version__}"
    named = "import importlib.metadata as m; print(m.version('signage-hub'))"
    assert _run(python, "-c", named).strip() == __version__
    assert _run(python, "-c", ABSENT).strip() == "[]"
    _answers(hub, "serve", within=30)


def test_scripts_serve_on_a_fresh_clone_installs_only_the_runtime(tmp_path: Path) -> None:
    """The README's first command, on a copy of this tree without .venv."""
    clone = tmp_path / "clone"
    shutil.copytree(ROOT, clone, ignore=shutil.ignore_patterns(*NOT_COPIED))
    _answers(clone / "scripts" / "serve", within=240)  # the first run installs
    python = clone / ".venv" / "bin" / "python"
    assert _run(python, "-c", ABSENT).strip() == "[]"


def test_a_node_alone_loads_no_redis_client_and_no_socket_client() -> None:
    """A quarter of a node's import time was the Redis client's (and, where it is installed,
    OpenTelemetry's, which it loads): a node without `HUB_REDIS_URL` needs neither. A sixth
    was `hub listen`'s client, which no node needs."""
    loaded = "import sys, hub.app; print(sorted(sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", loaded], capture_output=True, text=True, check=True, cwd=ROOT
    )
    modules = done.stdout
    assert "'starlette'" in modules
    assert "'redis'" not in modules
    assert "'opentelemetry'" not in modules
    assert "'hub.client'" not in modules
