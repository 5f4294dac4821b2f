"""The event-stream benchmark runs as BENCHMARKS.md runs it, small: each row's shape, every
session held and ended, and nothing lost, over streams and sockets alike."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from tests.support import unmeasured_env

ROOT = Path(__file__).resolve().parent.parent


def test_the_stream_benchmark_measures_both_transports_without_losing_an_event(
    tmp_path: Path,
) -> None:
    out = tmp_path / "streams.json"
    command = [sys.executable, "-m", "loadtest.streams", "--idle", "60", "--subscribers", "30"]
    command += ["--rate", "5", "--seconds", "1", "--rounds", "1", "--sample", "1"]
    command += ["--settle", "0.2", "--out", str(out)]  # a rest is for RSS, not this check
    # The load side is not code under test: measuring it would only slow it down.
    subprocess.run(
        command, cwd=ROOT, env=unmeasured_env(), check=True, timeout=240, capture_output=True
    )
    rows = orjson.loads(out.read_text())["steps"]
    assert [(row["step"], row["transport"]) for row in rows] == [
        ("idle", "stream"),
        ("idle", "websocket"),
        ("fanout", "stream"),
        ("fanout", "websocket"),
    ]
    for row in rows[:2]:
        assert (row["sessions"], row["held"], row["ended_by_node"]) == (60, 60, 0)
        assert row["left_open_after_close"] == 0
        assert row["accepted_per_s"] > 0
        assert 0 < row["kib_per_session"] < 1000
    for row in rows[2:]:
        assert (row["published"], row["refused"]) == (5, 0)
        assert row["expected"] == row["delivered"] == 5 * 30
        assert (row["loss"], row["ended_by_node"]) == (0, 0)
        assert row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
        # So small a run may take the node less CPU than its clock's tick (None then).
        assert row["delivered_per_cpu_s"] is None or row["delivered_per_cpu_s"] > 0
