"""The lock files agree with pyproject.toml, and the image installs what the tests ran with.

scripts/install installs requirements/dev.lock and the Dockerfile requirements/run.lock (the
dependencies and the tracing extra), each without resolving again: a dependency added to
pyproject.toml without `scripts/lock` would be missing there, and a range changed without it
would go unchecked.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "requirements"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
STALE = "run scripts/lock"


def _requirements(specs: list[str]) -> list[Requirement]:
    """`specs` as requirements, the project's own extras (`signage-hub[tracing]`) spelled
    out."""
    own = canonicalize_name(PROJECT["name"])
    found = []
    for requirement in map(Requirement, specs):
        if canonicalize_name(requirement.name) != own:
            found.append(requirement)
            continue
        for extra in sorted(requirement.extras):
            found += _requirements(PROJECT["optional-dependencies"][extra])
    return found


RUNTIME = _requirements(PROJECT["dependencies"])
TRACING = _requirements(PROJECT["optional-dependencies"]["tracing"])
DEV = _requirements(PROJECT["optional-dependencies"]["dev"])


def _pins(lock: str) -> dict[str, Version]:
    text = (LOCKS / lock).read_text()
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", text, re.MULTILINE)
    return {canonicalize_name(name): Version(version) for name, version in pins}


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [("run.lock", RUNTIME + TRACING), ("dev.lock", RUNTIME + DEV)],
)
def test_every_declared_dependency_is_locked_within_its_range(
    lock: str, requirements: list[Requirement]
) -> None:
    pins = _pins(lock)
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in requirements/{lock}: {STALE}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements/{lock} has {name}=={pins[name]}, outside {requirement}: {STALE}"
        )


def test_the_image_gets_the_versions_the_tests_ran_with() -> None:
    tested = _pins("dev.lock")
    shipped = _pins("run.lock")
    differ = {
        name: (str(version), str(tested.get(name)))
        for name, version in shipped.items()
        if tested.get(name) != version
    }
    assert not differ, f"run.lock and dev.lock disagree (run, dev): {differ}: {STALE}"


@pytest.mark.parametrize("lock", ["run.lock", "dev.lock"])
def test_every_pin_carries_its_hashes(lock: str) -> None:
    entries = re.split(r"\n(?=[A-Za-z0-9])", (LOCKS / lock).read_text())
    unhashed = [
        entry.split()[0]
        for entry in entries
        if "==" in entry.split("\n", 1)[0] and "--hash=sha256:" not in entry
    ]
    assert not unhashed, f"pinned without a hash in requirements/{lock}: {unhashed}: {STALE}"


def test_installs_take_the_locks_and_resolve_nothing_again() -> None:
    dockerfile = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    runs = re.findall(r"^RUN (.*)$", dockerfile, re.MULTILINE)
    locked = [n for n, run in enumerate(runs) if "-r requirements/run.lock" in run]
    assert locked, "the Dockerfile does not install requirements/run.lock"
    assert "--require-hashes" in runs[locked[0]]
    [hub] = [n for n, run in enumerate(runs) if re.search(r"pip install .*--no-deps \.", run)]
    assert hub > locked[0], "hub goes on top of the locked dependencies"
    install = (ROOT / "scripts" / "install").read_text()
    assert "--require-hashes -r requirements/dev.lock" in install
    assert "--no-deps -e ." in install
