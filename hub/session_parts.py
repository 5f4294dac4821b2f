"""What every session of a node uses, gathered once per node."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from hub.auth import Principal
from hub.config import Settings
from hub.liveness import HeartbeatWatch
from hub.metrics import Metrics
from hub.node import Node
from hub.presence import Presence
from hub.publishing import Publisher
from hub.stats import Tally
from hub.tracing import Tracer

Verify = Callable[[str], Awaitable[Principal]]
"""Verifies a token as a handshake does: what a `refresh` is checked with."""


@dataclass(frozen=True, slots=True)
class SessionParts:
    """What every session of a node uses, in one object: a socket holds one reference to
    its node's parts, not one to each."""

    settings: Settings
    node_id: str
    run: str
    """This run of the node: connection ids stay unique when a node restarts under the
    same id."""
    node: Node
    publisher: Publisher
    presence: Presence
    heartbeats: HeartbeatWatch
    tracer: Tracer
    metrics: Metrics
    tally: Tally
    verify: Verify
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def next_conn_id(self) -> str:
        return f"{self.run}.{next(self._ids)}"
