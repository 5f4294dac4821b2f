"""The load tools run as the README says: a short benchmark, and a short locust swarm.

Smoke runs with tiny numbers: they show the tools work on a fresh clone, not how fast the
hub is (BENCHMARKS.md is for that, measured outside the test suite).
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import orjson

from tests.conftest import NodeFactory
from tests.support import SECRET, unmeasured_env

ROOT = Path(__file__).resolve().parent.parent
FIXED = orjson.dumps(
    [
        {"user_class_name": "DashboardUser", "fixed_count": 2},
        {"user_class_name": "OperatorUser", "fixed_count": 1},
    ]
).decode()


def test_the_benchmark_runs_its_scenarios_and_draws_its_chart(tmp_path: Path) -> None:
    out, chart = tmp_path / "bench.json", tmp_path / "bench.png"
    command = [sys.executable, "-m", "loadtest.bench", "--only", "idle,fanout,latency"]
    command += ["--idle", "300", "--subscribers", "60", "--fanout-rates", "5"]
    command += ["--latency-rates", "5", "--seconds", "1", "--out", str(out)]
    command += ["--chart", str(chart)]
    subprocess.run(command, cwd=ROOT, check=True, timeout=240, capture_output=True)
    results = orjson.loads(out.read_text())
    [idle] = results["idle"]
    assert idle["sockets"] == 300
    assert 0 < idle["kib_per_socket"] < 1000
    [fanout] = results["fanout"]
    assert fanout["expected"] == fanout["delivered"] == 5 * 60
    assert fanout["loss"] == 0
    assert results["latency"][0]["loss"] == 0
    assert chart.read_bytes().startswith(b"\x89PNG")


def test_a_locust_swarm_reports_sockets_events_and_broadcasts(
    hub_node: NodeFactory, tmp_path: Path
) -> None:
    # Heartbeats every second: the dashboards see status events whenever they subscribe.
    single = hub_node("solo", heartbeat_interval=1, heartbeat_timeout=5)
    prefix = tmp_path / "locust"
    env = unmeasured_env(HUB_JWT_SECRET=SECRET)  # the swarm is load, not code under test
    command = [sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py", "--headless"]
    command += ["-u", "12", "-r", "12", "-t", "8s", "--host", single.url]
    command += ["--csv", str(prefix), "--only-summary", "--config-users", FIXED]
    subprocess.run(command, cwd=ROOT, env=env, check=True, timeout=120, capture_output=True)
    with open(f"{prefix}_stats.csv", newline="") as stats:
        rows = {row["Name"]: row for row in csv.DictReader(stats)}
    assert int(rows["connect device"]["Request Count"]) > 0
    assert int(rows["connect dashboard"]["Request Count"]) > 0
    assert int(rows["event status"]["Request Count"]) > 0
    assert any(name.startswith("broadcast") for name in rows)
    assert int(rows["Aggregated"]["Failure Count"]) == 0
