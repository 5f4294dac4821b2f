"""The minting examples in docs/tokens.md, run as written: the hub verifies what they print."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hub.auth import Authenticator, Role
from hub.config import Settings
from tests.support import SECRET, required

DOC = Path(__file__).resolve().parent.parent / "docs" / "tokens.md"
RUNNERS = {
    "python": ("example.py", [sys.executable, "example.py"]),
    "javascript": ("example.js", ["node", "example.js"]),
    "go": ("example.go", ["go", "run", "example.go"]),
}


def _block(language: str) -> str:
    found = re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(found) == 1, f"docs/tokens.md has {len(found)} {language} blocks"
    return str(found[0])


@pytest.mark.parametrize("language", list(RUNNERS))
def test_a_minting_example_makes_a_token_the_hub_takes(language: str, tmp_path: Path) -> None:
    name, command = RUNNERS[language]
    required(command[0], {"node": "nodejs", "go": "golang-go"}.get(command[0]))
    (tmp_path / name).write_text(_block(language))
    env = {
        **os.environ,
        "HUB_JWT_SECRET": SECRET,
        "GOCACHE": str(tmp_path / "go-cache"),
        "GOPATH": str(tmp_path / "go"),
    }
    made = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    authenticator = Authenticator(Settings(jwt_secret=SECRET))
    principal = asyncio.run(authenticator.verify(made.stdout.strip()))
    assert (principal.sub, principal.role, principal.tenant) == ("player-1", Role.DEVICE, "acme")
    assert principal.auto_rooms == ("device:player-1", "devices", "location:lobby")
