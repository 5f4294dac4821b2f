"""The soak's figures: what each node and the Redis hold, sampled every few seconds, the
table of the samples, and the verdict on them (flat in the second half of the run)."""

from __future__ import annotations

import csv
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis

from loadtest.processes import rss_bytes

MIB = 1 << 20
COLUMNS = (
    *("t", "phase", "a_sockets", "a_rss_mib", "a_fds", "a_tasks", "b_sockets", "b_rss_mib"),
    *("b_fds", "b_tasks", "redis_keys", "redis_mib", "events", "missed"),
)
JUDGED = ("a_rss_mib", "a_fds", "a_tasks", "b_fds", "b_tasks", "redis_keys", "redis_mib")
"""The figures the verdict holds flat. `a` is the node that is never restarted; `b` is a
new process after each restart, so its memory is shown, not judged: its descriptors and
tasks must come back to the same level once its clients are back."""
MIN_SETTLED = 4
"""Settled samples the second half needs at least for a verdict."""


@dataclass(frozen=True, slots=True)
class Watched:
    """A node as the sampler sees it: its label, port and current process id (None while
    it is down)."""

    label: str
    port: int
    pid: int | None


async def node_figures(node: Watched, http: httpx.AsyncClient, key: str) -> dict[str, Any]:
    """The node's sockets and tasks (from /metrics), resident memory and open descriptors
    (from /proc); None each while the node is down or restarting."""
    figures: dict[str, Any] = dict.fromkeys(("sockets", "rss_mib", "fds", "tasks"))
    if node.pid is None:
        return {f"{node.label}_{name}": value for name, value in figures.items()}
    try:
        answer = await http.get(
            f"http://127.0.0.1:{node.port}/metrics", headers={"Authorization": f"Bearer {key}"}
        )
        metrics = _metrics(answer.text) if answer.status_code == 200 else {}
        figures["rss_mib"] = round(rss_bytes(node.pid) / MIB, 1)
        figures["fds"] = len(os.listdir(f"/proc/{node.pid}/fd"))
    except (httpx.HTTPError, OSError, RuntimeError):
        metrics = {}
    figures["sockets"] = metrics.get("hub_connections")
    figures["tasks"] = metrics.get("hub_tasks")
    return {f"{node.label}_{name}": value for name, value in figures.items()}


def _metrics(text: str) -> dict[str, int]:
    """`hub_tasks`, and `hub_connections` summed over its roles."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in ("hub_tasks", "hub_connections"):
            found[name] = found.get(name, 0) + int(float(line.rsplit(" ", 1)[1]))
    return found


async def redis_figures(client: aioredis.Redis) -> dict[str, Any]:
    """The Redis's keys (DBSIZE) and memory (INFO memory used_memory)."""
    keys = await client.dbsize()
    memory = await client.info("memory")
    return {"redis_keys": keys, "redis_mib": round(memory["used_memory"] / MIB, 2)}


def header() -> str:
    return " ".join(f"{column:>10}" for column in COLUMNS)


def line(sample: dict[str, Any]) -> str:
    return " ".join(f"{cell(sample.get(column)):>10}" for column in COLUMNS)


def cell(value: Any) -> str:
    return "-" if value is None else str(value)


def levels(samples: Sequence[dict[str, Any]], seconds: float, bound: float) -> dict[str, Any]:
    """Each judged figure's level in the first half, at the start and at the end of the
    second half (medians of the settled samples of its first and last thirds), its growth
    between those two as a ratio, and whether that stays within `bound`."""
    settled = [s for s in samples if s["phase"] == "settled"]
    first = [s for s in settled if s["t"] < seconds / 2]
    second = [s for s in settled if s["t"] >= seconds / 2]
    third = max(1, len(second) // 3)
    figures = {}
    for name in (*JUDGED, "b_rss_mib"):
        start, end = _median(second[:third], name), _median(second[-third:], name)
        growth = round(end / start - 1, 4) if start and end is not None else None
        figures[name] = {
            "first_half": _median(first, name),
            "second_start": start,
            "second_end": end,
            "growth": growth,
            "flat": None if name not in JUDGED else growth is not None and growth <= bound,
        }
    return {"settled_samples": len(second), "bound": bound, "figures": figures}


def _median(samples: Sequence[dict[str, Any]], name: str) -> float | None:
    values = [s[name] for s in samples if s.get(name) is not None]
    return round(statistics.median(values), 2) if values else None


def verdict(judged: dict[str, Any], missed: int) -> list[str]:
    """What fails the soak: a judged figure that grew past the bound, too few settled
    samples to tell, a missed event. Empty: it passed."""
    failures = [f"missed events: {missed}"] if missed else []
    if judged["settled_samples"] < MIN_SETTLED:
        failures.append(f"only {judged['settled_samples']} settled samples in the second half")
    for name, figure in judged["figures"].items():
        if figure["flat"] is False:
            failures.append(f"{name} grew {figure['growth']:+.1%} (bound {judged['bound']:.0%})")
    return failures


def write(path: str, report: dict[str, Any]) -> None:
    """The samples as CSV (`.csv`), or the whole report with them as JSON."""
    samples = report["samples"]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        with out.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(samples[0]) if samples else COLUMNS)
            writer.writeheader()
            writer.writerows(samples)
        return
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
