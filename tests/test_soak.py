"""The soak scenario, small and short: two nodes through a Redis, a node restarted every
20 s, devices reconnecting and resuming; the figures reach their plateau and no resuming
device misses an event. BENCHMARKS.md has the hour-long run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from loadtest import soakfigures
from loadtest.soakfleet import Device, Tally, Track
from tests.support import required

ROOT = Path(__file__).resolve().parent.parent
BOUND = 0.2
"""Growth allowed in the second half of the minute: generous, the machine is shared."""


def test_a_soak_keeps_its_figures_flat_and_misses_no_event(tmp_path: Path) -> None:
    required("redis-server")
    out = tmp_path / "soak.json"
    command = [sys.executable, "-m", "loadtest.soak", "--devices", "300", "--minutes", "1"]
    command += ["--restart-every", "20", "--sample", "5", "--drain", "2", "--rate", "3"]
    command += ["--command-every", "5", "--history-ttl", "30", "--bound", str(BOUND)]
    command += ["--out", str(out)]
    run = subprocess.run(command, cwd=ROOT, timeout=400, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report: dict[str, Any] = orjson.loads(out.read_bytes())
    assert report["failures"] == []
    assert (report["missed"], report["missed_at_end"], report["unrecovered"]) == (0, 0, 0)
    assert report["restarts"] >= 2
    assert report["restart_exit_codes"] == {"0": report["restarts"]}
    assert report["reconnects"] > 0
    assert report["resumes"] > 0
    assert report["caught_up"] > 0
    assert report["events"] > 0
    assert 0 < report["receipts_acked"] <= report["receipts_sent"]
    assert report["errors"] == {}
    assert set(report["closes"]) == {"1012"}
    assert report["status_events"]["delivery.receipt"] > 0
    figures = report["levels"]["figures"]
    for name in soakfigures.JUDGED:
        assert figures[name]["growth"] <= BOUND, (name, figures[name])
    for name in ("a_fds", "a_tasks", "b_fds", "b_tasks"):
        assert figures[name]["second_end"] <= figures[name]["first_half"] * (1 + BOUND), name
    assert report["samples"][-1]["phase"] == "settled"


def _device() -> tuple[Device, Tally]:
    tally = Tally()
    device = Device("soak-0", "token", 0, "127.0.0.1", tally)
    device.tracks = {"devices": Track()}
    return device, tally


def _event(event_id: str, seq: int) -> dict[str, Any]:
    data = {"level": "info", "message": "soak", "seq": seq}
    return {"type": "event", "room": "devices", "event": "alert", "id": event_id, "data": data}


def _resume(device: Device, recovered: bool, held: list[dict[str, Any]]) -> None:
    """A reconnect: the welcome, events arriving before the subscribe's ack, the ack."""
    device.welcomed({"type": "welcome", "heartbeat": {"interval": 15}})
    for event in held:
        device.take(event)
    ack = {"type": "ack", "ref": "devices", "room": "devices", "recovered": recovered}
    device.take({**ack, "epoch": "e1", "last": None})


def test_a_device_counts_the_events_a_resume_did_not_bring() -> None:
    device, tally = _device()
    _resume(device, False, [])
    device.take(_event("10-0", 1))
    # Live events can arrive before the replay: they are held and taken in id order.
    _resume(device, True, [_event("13-0", 4), _event("11-0", 2), _event("13-0", 4)])
    assert (tally.events, tally.caught_up, tally.duplicates, tally.missed) == (3, 2, 1, 1)
    assert tally.gaps == ["soak-0 devices: got 4, expected 3"]
    assert device.missing({"devices": 6}) == 2
    assert tally.missed == 3


def test_a_gap_the_hub_owns_up_to_is_not_a_missed_event() -> None:
    device, tally = _device()
    _resume(device, False, [])
    device.take(_event("10-0", 1))
    _resume(device, False, [_event("20-0", 9)])
    assert (tally.unrecovered, tally.missed, tally.events) == (1, 0, 2)
    device.take(_event("21-0", 10))
    assert tally.missed == 0


def test_a_figure_that_grows_in_the_second_half_fails_the_verdict() -> None:
    samples: list[dict[str, Any]] = [
        {"t": t, "phase": "settled", **dict.fromkeys(soakfigures.JUDGED, 100)} for t in range(10)
    ]
    for sample in samples[5:]:
        sample["a_rss_mib"] = 100 + 10 * sample["t"]
    judged = soakfigures.levels(samples, 10, 0.05)
    assert judged["figures"]["a_fds"]["flat"] is True
    assert judged["figures"]["a_rss_mib"]["flat"] is False
    assert soakfigures.verdict(judged, 0) == ["a_rss_mib grew +26.7% (bound 5%)"]
    assert soakfigures.verdict(judged, 2)[0] == "missed events: 2"
