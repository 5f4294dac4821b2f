"""The benchmark's state, receipts and shard scenarios run as BENCHMARKS.md runs them, small:
each row's shape, and nothing refused or mismatched. A file of their own, so that they run
beside tests/test_loadtest.py's socket scenarios rather than after them."""

from __future__ import annotations

from pathlib import Path

from tests.support import quick_bench


def test_the_state_receipt_and_shard_scenarios_run(tmp_path: Path) -> None:
    command = ["--only", "state,receipts,shards", "--seconds", "1"]
    command += ["--state-devices", "30", "--state-rooms", "20", "--state-waves", "1"]
    command += ["--receipt-devices", "30", "--receipt-rates", "5", "--receipt-seconds", "1"]
    command += ["--shard-tenants", "2", "--shard-devices", "5"]
    results = quick_bench(tmp_path, command)
    setups = ["one node", "two nodes + Redis"]
    assert [(row["setup"], row["wave"]) for row in results["state"]] == [(s, 1) for s in setups]
    for row in results["state"]:
        assert (row["welcomes"], row["mismatches"], row["failed"]) == (30, 0, 0)
        assert row["welcomes_per_s"] > 0
        assert row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert [row["setup"] for row in results["receipts"]] == setups
    for row in results["receipts"]:
        assert row["expected"] == row["sent"] == row["acked"] == 5 * 30
        assert (row["errors"], row["missing"], row["closed"]) == (0, 0, 0)
        assert row["p50_ms"] <= row["p99_ms"]
    one, three = "2 nodes + one Redis", "2 nodes + cluster of 3 masters"
    assert [row["setup"] for row in results["shards"]] == [one, one, three, three]
    for row in results["shards"]:
        assert row["published_per_s"] > 0
        assert row["delivered_per_s"] > 0
        assert len(row["redis_cpu_pct"]) == (3 if row["setup"] == three else 1)
        assert row["redis_commands_per_publish"] > 1
