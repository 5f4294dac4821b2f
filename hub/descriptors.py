"""Open files: the caps on connections that the process's open-file limit can keep.

Every connection is an open file. A node whose `HUB_MAX_CONNECTIONS` sockets and
`HUB_MAX_PENDING_REQUESTS` connections waiting for their headers do not fit in its
`RLIMIT_NOFILE` fails where it cannot afford to: past the limit it cannot accept at all, so
idle peers that send nothing would starve the health checks that the pending cap exists to
let in. So a node takes its soft limit up to its hard one, counts what it holds besides
those connections (the reserve), and lowers both caps by the same factor until they fit
beside it; below the reserve it refuses to start.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

from hub.config import Settings

PROCESS_FILES = 24
"""What a node holds whatever its load: the standard streams, the event loop's own, its
listening sockets, a JWKS fetch or a trace export under way (14 at rest, measured)."""
REQUEST_FILES = 32
"""Connections being answered rather than waiting for their headers, which the pending cap
does not count: health checks, REST requests, handshakes closed past the socket cap."""
METRICS_FILES = 4
"""`HUB_METRICS_PORT`'s listener and the scrapes it answers at once."""
SUBSCRIBER_FILES = 1
"""The pub/sub connection to each Redis (each cluster master)."""
CLUSTER_MASTERS = 3
"""The fewest masters a Redis Cluster has: each one may get a connection of every pool."""
FEWEST_CONNECTIONS = 2
"""Below one socket and one connection waiting for its headers, a node is of no use."""


class TooFewFiles(Exception):
    """The open-file limit leaves no room for connections besides what the node holds."""


@dataclass(frozen=True, slots=True)
class Fit:
    """The settings with caps that fit the limit, and the line that says what was lowered
    (None when nothing was)."""

    settings: Settings
    clamped: str | None = None


def redis_files(settings: Settings) -> int:
    """Connections to Redis at most: the writers and readers' pools and the subscriber, on
    each master of a cluster (at least `CLUSTER_MASTERS`, or one per seed named), plus one
    to each Sentinel."""
    deployment = settings.redis
    if deployment is None:
        return 0
    from hub.redis.clients import WRITE_CONNECTIONS  # a node alone never loads Redis's client

    per_server = WRITE_CONNECTIONS + settings.redis_read_connections + SUBSCRIBER_FILES
    if deployment.cluster:
        return per_server * max(CLUSTER_MASTERS, len(deployment.url.split(",")))
    return per_server + len(deployment.sentinels)


def reserve(settings: Settings) -> int:
    """Open files a node holds besides its sockets and the connections waiting for their
    headers."""
    metrics = METRICS_FILES if settings.metrics_port is not None else 0
    return PROCESS_FILES + REQUEST_FILES + metrics + redis_files(settings)


def files_needed(settings: Settings) -> int:
    """Open files a node may hold at once, at its caps."""
    return settings.max_connections + settings.max_pending_requests + reserve(settings)


def fit(limit: int | None, settings: Settings) -> Fit:
    """`settings` with `HUB_MAX_CONNECTIONS` and `HUB_MAX_PENDING_REQUESTS` lowered, in the
    same proportion, until they fit in `limit` open files (None: no limit) beside the
    reserve. Raises `TooFewFiles` when not even `FEWEST_CONNECTIONS` fit."""
    held = reserve(settings)
    sockets, pending = settings.max_connections, settings.max_pending_requests
    if limit is None or sockets + pending + held <= limit:
        return Fit(settings)
    room = limit - held
    if room < FEWEST_CONNECTIONS:
        raise TooFewFiles(
            f"RLIMIT_NOFILE {limit} leaves no room for connections: a node holds {held} "
            f"other open files ({_held(settings)}); raise the limit (ulimit -n, the "
            f"container's nofile) to at least {held + FEWEST_CONNECTIONS}, or to "
            f"{files_needed(settings)} for these settings"
        )
    fitted_pending = max(1, room * pending // (sockets + pending))
    fitted = settings.model_copy(
        update={"max_connections": room - fitted_pending, "max_pending_requests": fitted_pending}
    )
    lowered = [
        f"{name} {before} -> {after}"
        for name, before, after in (
            ("HUB_MAX_CONNECTIONS", sockets, fitted.max_connections),
            ("HUB_MAX_PENDING_REQUESTS", pending, fitted.max_pending_requests),
        )
        if after != before
    ]
    return Fit(
        fitted,
        f"RLIMIT_NOFILE {limit}: {' and '.join(lowered)}, to fit beside the {held} other "
        f"open files a node holds ({_held(settings)}); a limit of {files_needed(settings)} "
        "(ulimit -n, the container's nofile) keeps the settings",
    )


def _held(settings: Settings) -> str:
    """The reserve, part by part."""
    parts = [f"{PROCESS_FILES} of the process", f"{REQUEST_FILES} for requests being answered"]
    if settings.metrics_port is not None:
        parts.append(f"{METRICS_FILES} for the metrics port")
    if redis := redis_files(settings):
        parts.append(f"{redis} to Redis")
    return ", ".join(parts)


def open_file_limit(wanted: int) -> int | None:
    """The open files this process may hold (None: no limit), once its soft limit is raised
    to its hard one, as servers do; to `wanted` when the hard one is unlimited. The only
    place that reads or changes the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft  # a system cap below the hard limit: keep what there is
        return target
    return None if soft == resource.RLIM_INFINITY else soft


def fitted(settings: Settings) -> Fit:
    """`settings` with the caps this process's open-file limit can keep, raising the soft
    limit first: where a node starts."""
    return fit(open_file_limit(files_needed(settings)), settings)
