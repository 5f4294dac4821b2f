"""The documents say what the code does: every setting, error code and close code."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.config import Settings
from hub.errors import ErrorCode
from hub.protocol import Close
from tests.support import metric_names

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_setting_is_in_the_readme(name: str) -> None:
    assert f"HUB_{name.upper()}" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_code_is_in_the_protocol_doc(code: ErrorCode) -> None:
    assert f"`{code.value}`" in (ROOT / "docs" / "protocol.md").read_text()


@pytest.mark.parametrize("code", list(Close))
def test_every_close_code_is_in_the_protocol_doc(code: Close) -> None:
    assert str(code.value) in (ROOT / "docs" / "protocol.md").read_text()


def test_every_metric_is_in_the_operations_doc() -> None:
    names = metric_names()
    doc = (ROOT / "docs" / "operations.md").read_text()
    assert {"hub_connections", "hub_tasks", "process_resident_memory_bytes"} <= names
    for name in names:
        assert f"`{name}" in doc, name
