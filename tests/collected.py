"""A run fails when a test it collected never ran.

pytest says how many tests passed, failed or were skipped, not how many never ran at all:
a plugin that gives several tests one node id, run on several workers that share out the
tests by node id (`--dist loadfile`), left all but one of them out while the run passed.
This plugin counts every collected test against the tests pytest reported running, on one
process or on the xdist controller (which collects nothing itself, but hears every worker's
collection and every report), and turns a run that left some out into a failed one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

STARTED = {"setup", "???"}
"""The reports that say a test was run: its setup (passed, failed or skipped), or xdist's
report of a test whose worker crashed under it."""
CUT_SHORT = {pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR}


class RanEveryTest:
    """The tests one session collected and the tests it ran, by node id, as many times as
    either holds each id."""

    def __init__(self) -> None:
        self.collected: Counter[str] | None = None
        self.ran: Counter[str] = Counter()
        self.missing: Counter[str] = Counter()

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """The tests left after selection (`-k`, `--deselect`, `--lf`) on one process."""
        self.collected = Counter(item.nodeid for item in session.items)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: Sequence[str]) -> None:
        """A worker's collection, as the controller hears it: every worker collects the
        same tests, and a worker started after a crash collects them again."""
        if self.collected is None:
            self.collected = Counter(ids)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when in STARTED:
            self.ran[report.nodeid] += 1

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        config = session.config
        if hasattr(config, "workerinput") or config.option.collectonly:
            return  # the controller counts a worker's tests; a collection runs none
        if self.collected is None or session.shouldstop or session.shouldfail:
            return  # nothing collected, or stopped early on purpose (-x, --maxfail)
        if exitstatus in CUT_SHORT:
            return
        self.missing = self.collected - self.ran
        if self.missing:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.missing:
            return
        assert self.collected is not None
        collected = self.collected.total()
        ran = collected - self.missing.total()
        terminalreporter.write_sep("=", "tests collected but never run", red=True)
        terminalreporter.write_line(f"{collected} collected, {ran} ran: these never ran:")
        for nodeid, times in sorted(self.missing.items()):
            of = self.collected[nodeid]
            terminalreporter.write_line(f"  {nodeid}" + (f" ({times} of {of})" if of > 1 else ""))


def pytest_configure(config: pytest.Config) -> None:
    """One count per session, even when a test runs pytest inside this process."""
    config.pluginmanager.register(RanEveryTest(), "ran-every-test")
