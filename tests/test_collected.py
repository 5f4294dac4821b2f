"""The check that every collected test ran (tests/collected.py), held against small suites:
on one process and on two xdist workers sharing the tests out file by file, as scripts/test
runs them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKERS = ["0", "2"]
"""`-n 0` runs in this process; `-n 2` in a pytest of its own, whose workers import the
plugin by name from this checkout."""

SUITE = """
def test_a():
    pass

def test_b():
    pass

def test_c():
    pass
"""
NEVER_RUNS_B = """
import pytest

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    # test_b is collected, then never run: no report of it at all.
    return True if item.name == "test_b" else None
"""
TWINS = """
import pytest

class Twin(pytest.Item):
    def runtest(self):
        pass

class Twins(pytest.File):
    def collect(self):
        # Two tests under one node id, as a plugin may make them.
        for name in ("one", "two"):
            yield Twin.from_parent(self, name=name, nodeid=f"{self.nodeid}::twin")

def pytest_collect_file(parent, file_path):
    if file_path.name == "twins.txt":
        return Twins.from_parent(parent, path=file_path)
"""


@pytest.fixture(autouse=True)
def importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin importable by name from a suite's own directory, and its workers'; of the
    installed plugins only xdist, named below: loading them all (locust, schemathesis,
    hypothesis) was most of each small suite's time."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def _run(pytester: pytest.Pytester, workers: str, *args: str) -> pytest.RunResult:
    # The suite's own ini pins its rootdir, so node ids are named from its directory whatever
    # a parent directory holds (a stray setup.py in /tmp made pytest root the run there).
    pytester.makeini("[pytest]\n")
    options = ["-p", "tests.collected", "-p", "xdist.plugin", "-p", "no:cacheprovider"]
    options += ["-n", workers, *args]
    if workers == "0":
        return pytester.runpytest_inprocess(*options)
    return pytester.runpytest_subprocess(*options, "--dist", "loadfile")


@pytest.mark.parametrize("workers", WORKERS)
def test_a_run_that_ran_every_test_passes(pytester: pytest.Pytester, workers: str) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = _run(pytester, workers)
    result.assert_outcomes(passed=3)
    assert result.ret == pytest.ExitCode.OK
    assert "never ran" not in result.stdout.str()


@pytest.mark.parametrize("workers", WORKERS)
def test_a_test_collected_but_never_run_fails_the_run(
    pytester: pytest.Pytester, workers: str
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeconftest(NEVER_RUNS_B)
    result = _run(pytester, workers)
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*tests collected but never run*", "3 collected, 2 ran: these never ran:"]
    )
    result.stdout.re_match_lines([r"^  test_suite\.py::test_b$"])


@pytest.mark.parametrize("workers", WORKERS)
def test_a_deselected_test_is_not_counted(pytester: pytest.Pytester, workers: str) -> None:
    """A partial run (`-k`, a file, `--lf`) is held to the tests it selected."""
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeconftest(NEVER_RUNS_B)
    result = _run(pytester, workers, "-k", "not test_b")
    assert result.parseoutcomes()["passed"] == 2  # the controller counts no deselected
    assert result.ret == pytest.ExitCode.OK


@pytest.mark.parametrize("workers", WORKERS)
def test_a_skipped_or_failed_test_ran(pytester: pytest.Pytester, workers: str) -> None:
    pytester.makepyfile(
        test_suite="""
        import pytest

        @pytest.mark.skip(reason="not here")
        def test_skipped():
            pass

        @pytest.mark.xfail(reason="known")
        def test_xfailed():
            raise AssertionError

        @pytest.fixture
        def broken():
            raise RuntimeError

        def test_error(broken):
            pass

        def test_failed():
            raise AssertionError
        """
    )
    result = _run(pytester, workers)
    result.assert_outcomes(skipped=1, xfailed=1, errors=1, failed=1)
    assert "never ran" not in result.stdout.str()


@pytest.mark.parametrize("workers", WORKERS)
def test_tests_under_one_node_id_are_counted_each(pytester: pytest.Pytester, workers: str) -> None:
    """What left schemathesis' generated tests out: xdist shares tests out by node id, so
    of two under one id, two workers run one; a single process runs both."""
    pytester.makeconftest(TWINS)
    pytester.makefile(".txt", twins="")
    result = _run(pytester, workers)
    if workers == "0":
        result.assert_outcomes(passed=2)
        assert result.ret == pytest.ExitCode.OK
    else:
        result.assert_outcomes(passed=1)
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.stdout.fnmatch_lines(["2 collected, 1 ran: these never ran:"])
        result.stdout.re_match_lines([r"^  twins\.txt::twin \(1 of 2\)$"])
