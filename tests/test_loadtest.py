"""The load tools run as the README says: a short benchmark, and a short locust swarm.

Smoke runs with tiny numbers: they show the tools work on a fresh clone, not how fast the
hub is (BENCHMARKS.md is for that, measured outside the test suite).
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from hub.protocol import welcome_frame
from loadtest import bench, state
from tests.conftest import NodeFactory
from tests.support import SECRET, quick_bench, unmeasured_env

ROOT = Path(__file__).resolve().parent.parent
FIXED = orjson.dumps(
    [
        {"user_class_name": "DashboardUser", "fixed_count": 2},
        {"user_class_name": "OperatorUser", "fixed_count": 1},
    ]
).decode()


def test_the_benchmark_runs_its_scenarios_and_draws_its_chart(tmp_path: Path) -> None:
    """The socket scenarios, small, in one run: each row's shape, nothing lost, and the
    chart (tests/test_bench_scenarios.py runs the others, on the other worker)."""
    command = ["--only", "idle,fanout,latency,heartbeats"]
    command += ["--idle", "300", "--subscribers", "60", "--fanout-rates", "5"]
    command += ["--latency-rates", "5", "--seconds", "1"]
    # Ten heartbeats per device in a second: past what the hub allows a device by default.
    command += ["--heartbeat-devices", "30", "--heartbeat-rates", "300"]
    results = quick_bench(tmp_path, command)
    [idle] = results["idle"]
    assert idle["sockets"] == 300
    assert 0 < idle["kib_per_socket"] < 1000
    [fanout] = results["fanout"]
    assert fanout["expected"] == fanout["delivered"] == 5 * 60
    assert fanout["loss"] == 0
    assert results["latency"][0]["loss"] == 0
    [beats] = results["heartbeats"]
    assert beats["sent"] == beats["delivered"] == 300
    assert (tmp_path / "bench-heartbeats.json").exists()
    assert results["title"] == bench.title(results["args"])
    assert results["title"].startswith("hub benchmark, quick run (--quick): idle, fanout, ")
    assert (tmp_path / "bench.png").read_bytes().startswith(b"\x89PNG")


def test_a_welcome_with_other_state_than_published_is_a_mismatch() -> None:
    content = b'{"type":"event","room":"location:s0","event":"content.update","data":{},'
    published = {"location:s0": [("content.update", "1700000000000-0")]}

    def welcome(event_id: str) -> bytes:
        event = content + b'"ts":1700000000000,"id":"' + event_id.encode() + b'"}'
        rooms = {"devices": [], "location:s0": [event]}
        return welcome_frame("c", "n", "device", "d", "bench", list(rooms), {}, {}, rooms)

    assert state.state_of(welcome("1700000000000-0")) == published
    assert state.state_of(welcome("1700000000000-1")) != published
    assert state.state_of(b'{"type":"welcome"}') != published


def test_quick_takes_every_size_from_its_profile_unless_given() -> None:
    assert {key: getattr(bench.options(["--quick"]), key) for key in bench.QUICK} == bench.QUICK
    assert {key: getattr(bench.options([]), key) for key in bench.FULL} == bench.FULL
    given = bench.options(["--quick", "--subscribers", "800", "--seconds", "2"])
    assert (given.subscribers, given.seconds, given.idle) == (800, 2.0, bench.QUICK["idle"])
    assert bench.QUICK["subscribers"] < bench.FULL["subscribers"]


def test_the_help_states_how_long_quick_takes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.options(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"--quick every scenario, small: about {bench.QUICK_SECONDS} s" in text


def test_the_chart_title_says_what_was_run() -> None:
    quick = " ".join(bench.title(vars(bench.options(["--quick"]))).splitlines())
    assert quick.startswith(f"hub benchmark, quick run (--quick): {', '.join(bench.SCENARIOS)}")
    assert "idle: 1,000 sockets" in quick
    assert "rooms: 400 subscribers in 200 rooms" in quick
    assert "heartbeats: 300 devices, 1 s steps" in quick
    assert "state: 300 devices, 200 rooms with state, 2 waves" in quick
    assert "receipts: 300 devices, 1 s steps" in quick
    full = bench.title(vars(bench.options(["--only", "fanout,cluster"])))
    assert full.splitlines() == [
        "hub benchmark, full run: fanout, cluster",
        "fanout, cluster: 2,000 subscribers in one room; 200-byte events, 5 s steps",
    ]


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--idle", "0"], "argument --idle: invalid comma-separated positive integers value"),
        (["--fanout-rates", "5,x"], "invalid comma-separated positive numbers value: '5,x'"),
        (["--seconds", "nan"], "argument --seconds: invalid positive number value"),
        (["--heartbeat-rates", "interval,inf"], "positive numbers or `interval` value"),
        (["--subscribers", "300"], "--subscribers must be a multiple of 200 for `rooms`"),
        (["--state-rooms", "1"], "--state-rooms must be at least 2 for `state`"),
        (["--receipt-rates", "0"], "argument --receipt-rates: invalid comma-separated positive"),
        (["--only", "fanout,warp"], "unknown scenarios: warp"),
    ],
)
def test_the_benchmark_refuses_bad_sizes_with_the_reason(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench.options(argv)
    assert exit_.value.code == 2
    assert error in capsys.readouterr().err


@pytest.mark.parametrize("processes", [[], ["--processes", "2"]], ids=["alone", "processes"])
def test_locust_without_a_target_stops_before_any_user_with_the_reason(
    processes: list[str],
) -> None:
    # No --run-time: a run that started would go on until the timeout below.
    command = [sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py", "--headless"]
    command += ["-u", "2", "-r", "2", *processes]
    env = unmeasured_env(HUB_JWT_SECRET=SECRET)
    env.pop("HUB_HOSTS", None)
    result = subprocess.run(command, cwd=ROOT, env=env, timeout=60, capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert "no target: pass --host http://HOST:PORT or set HUB_HOSTS" in result.stderr
    assert "Ramping" not in result.stderr


def _swarm(url: str, prefix: Path, users: int, seconds: int, config: str) -> dict[str, Any]:
    """Run locust headless against `url`; its statistics, one row per request name."""
    env = unmeasured_env(HUB_JWT_SECRET=SECRET)  # the swarm is load, not code under test
    command = [sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py", "--headless"]
    command += ["-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--host", url]
    command += ["--csv", str(prefix), "--only-summary", "--config-users", config]
    subprocess.run(command, cwd=ROOT, env=env, check=True, timeout=120, capture_output=True)
    with open(f"{prefix}_stats.csv", newline="") as stats:
        return {row["Name"]: row for row in csv.DictReader(stats)}


def test_a_locust_swarm_reports_sockets_events_and_broadcasts(
    hub_node: NodeFactory, tmp_path: Path
) -> None:
    # Heartbeats every second: the dashboards see status events whenever they subscribe.
    single = hub_node("solo", heartbeat_interval=1, heartbeat_timeout=5)
    rows = _swarm(single.url, tmp_path / "locust", 12, 8, FIXED)
    assert int(rows["connect device"]["Request Count"]) > 0
    assert int(rows["connect dashboard"]["Request Count"]) > 0
    assert int(rows["event status"]["Request Count"]) > 0
    assert any(name.startswith("broadcast") for name in rows)
    assert int(rows["Aggregated"]["Failure Count"]) == 0


def test_locust_devices_answer_commands_with_receipts_that_dashboards_see(
    hub_node: NodeFactory, tmp_path: Path
) -> None:
    single = hub_node("solo")
    commands_only = [
        {"user_class_name": "DashboardUser", "fixed_count": 1},
        {"user_class_name": "OperatorUser", "fixed_count": 1, "tasks": ["command"]},
    ]
    rows = _swarm(single.url, tmp_path / "locust", 5, 5, orjson.dumps(commands_only).decode())
    assert int(rows["broadcast devices"]["Request Count"]) > 0
    assert int(rows["command done"]["Request Count"]) > 0
    assert int(rows["event receipt"]["Request Count"]) > 0
    assert "command ack" not in rows
    assert int(rows["Aggregated"]["Failure Count"]) == 0


def test_the_scale_run_checks_presence_and_stats_against_the_sockets(tmp_path: Path) -> None:
    """Several nodes through a Redis Cluster, devices over client processes: the hub's own
    accounts match the sockets the clients hold."""
    out = tmp_path / "scale.json"
    command = [sys.executable, "-m", "loadtest.scale", "--nodes", "3", "--devices", "150"]
    command += ["--tenants", "4", "--seconds", "2", "--interval", "1", "--out", str(out)]
    subprocess.run(command, cwd=ROOT, check=True, timeout=240, capture_output=True)
    [row] = orjson.loads(out.read_text())["steps"]
    assert row["client_processes"] >= 3
    assert row["open_sockets"] == row["stats_device_connections"] == row["fleet_online"] == 150
    assert len(row["redis_cpu_pct"]) == 3


def test_the_start_up_measure_times_each_start_and_sums_them_up(tmp_path: Path) -> None:
    out = tmp_path / "startup.json"
    command = [sys.executable, "-m", "loadtest.startup", "--starts", "2", "--out", str(out)]
    subprocess.run(command, cwd=ROOT, check=True, timeout=60, capture_output=True)
    *starts, summary = orjson.loads(out.read_text())["steps"]
    assert [row["start"] for row in starts] == [1, 2]
    assert all(row["ready_s"] > 0 for row in starts)
    assert summary["starts"] == 2
    assert summary["min_s"] <= summary["median_s"] <= summary["max_s"]
