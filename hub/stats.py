"""A node's figures (connections, rooms, messages, queue, capacity, draining) and the
cluster's, which are every live node's figures summed.

The message counts are plain integers bumped on the hot paths (`Tally`); `/v1/stats` and
`/metrics` read the same numbers. Per-second rates come from two samples of the totals a
few seconds apart, so reading them costs nothing per message.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hub.auth import Role
from hub.protocol import Transport

ROLES = tuple(role.value for role in Role)


TRANSPORTS = tuple(transport.value for transport in Transport)
MESSAGES = ("in", "out", "dropped")


class Dropped(StrEnum):
    """Why a message was not delivered."""

    SLOW_CONSUMER = "slow_consumer"
    RATE_LIMITED = "rate_limited"
    HEARTBEAT_BACKLOG = "heartbeat_backlog"


@dataclass(slots=True)
class Tally:
    """Running totals of this node's messages."""

    messages_in: int = 0
    """Events this node accepted for publishing (socket, REST and the hub's own)."""
    messages_out: int = 0
    """Event frames written to this node's sockets."""
    dropped: Counter[str] = field(default_factory=Counter)
    """Messages not delivered, by reason."""
    tenants_in: Counter[str] = field(default_factory=Counter)
    """`messages_in` by tenant."""
    tenants_out: Counter[str] = field(default_factory=Counter)
    """`messages_out` by tenant."""

    def totals(self) -> dict[str, int]:
        return {
            "in": self.messages_in,
            "out": self.messages_out,
            "dropped": sum(self.dropped.values()),
        }


class Rates:
    """Messages per second over the last sampling period."""

    def __init__(self, tally: Tally) -> None:
        self._tally = tally
        self._at = time.monotonic()
        self._last = tally.totals()
        self.per_second: dict[str, float] = dict.fromkeys(MESSAGES, 0.0)

    def sample(self) -> None:
        now, totals = time.monotonic(), self._tally.totals()
        elapsed = max(now - self._at, 1e-9)
        self.per_second = {
            name: round((totals[name] - self._last[name]) / elapsed, 1) for name in MESSAGES
        }
        self._at, self._last = now, totals


@dataclass(frozen=True, slots=True)
class Figures:
    """One node at one moment."""

    node: str
    connections: dict[str, int]
    """Open sockets by role."""
    rooms: int
    messages: dict[str, int]
    per_second: dict[str, float]
    dropped: dict[str, int]
    """Dropped messages by reason."""
    queue_bytes: int
    """Bytes written to sockets and not yet taken by the kernel, all sockets together."""
    queued_sockets: int
    """Sockets with such a backlog."""
    max_connections: int
    draining: bool
    broker_up: bool
    tenants: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each tenant's share: `connections` by role, `rooms`, `messages` in and out."""
    transports: dict[str, int] = field(default_factory=dict)
    """Open sessions by what carries them."""

    def as_json(self) -> dict[str, Any]:
        total = sum(self.connections.values())
        return {
            "node": self.node,
            "connections": {"total": total, **self.connections},
            "transports": _transports(self.transports),
            "rooms": self.rooms,
            "messages": {**self.messages, "per_second": self.per_second},
            "dropped": self.dropped,
            "queue": {"bytes": self.queue_bytes, "sockets": self.queued_sockets},
            "capacity": {
                "max_connections": self.max_connections,
                "utilization": total / self.max_connections,
            },
            "draining": self.draining,
            "broker_up": self.broker_up,
            "tenants": self.tenants,
        }


def cluster(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Every live node's figures (as `Figures.as_json` wrote them), summed, with the list.

    `rooms` is the sum of each node's rooms: a room with members on two nodes counts twice.
    """
    nodes = sorted(nodes, key=lambda node: str(node["node"]))
    connections = {"total": 0, **dict.fromkeys(ROLES, 0)}
    transports = dict.fromkeys(TRANSPORTS, 0)
    messages: dict[str, Any] = {**dict.fromkeys(MESSAGES, 0)}
    per_second = dict.fromkeys(MESSAGES, 0.0)
    dropped: Counter[str] = Counter()
    queue = {"bytes": 0, "sockets": 0}
    rooms = capacity = draining = 0
    for node in nodes:
        for name in connections:
            connections[name] += node["connections"].get(name, 0)
        for name, count in _transports(node.get("transports")).items():
            transports[name] += count
        for name in MESSAGES:
            messages[name] += node["messages"][name]
            per_second[name] += node["messages"]["per_second"][name]
        dropped.update(node["dropped"])
        for name in queue:
            queue[name] += node["queue"][name]
        rooms += node["rooms"]
        capacity += node["capacity"]["max_connections"]
        draining += bool(node["draining"])
    messages["per_second"] = {name: round(value, 1) for name, value in per_second.items()}
    return {
        "connections": connections,
        "transports": transports,
        "rooms": rooms,
        "messages": messages,
        "dropped": dict(dropped),
        "queue": queue,
        "capacity": {
            "max_connections": capacity,
            "utilization": connections["total"] / capacity if capacity else 0.0,
        },
        "draining": draining > 0,
        "draining_nodes": draining,
        "nodes": nodes,
    }


def tenant_share(
    connections: dict[str, int],
    rooms: int,
    messages_in: int,
    messages_out: int,
    transports: dict[str, int] | None = None,
) -> dict[str, Any]:
    return {
        "connections": connections,
        "transports": _transports(transports),
        "rooms": rooms,
        "messages": {"in": messages_in, "out": messages_out},
    }


def _transports(counted: dict[str, int] | None) -> dict[str, int]:
    """Every transport's count; none counted (a node of an older release) is none open."""
    counted = counted or {}
    return {name: counted.get(name, 0) for name in TRANSPORTS}


def _share(node: dict[str, Any], tenant: str) -> dict[str, Any]:
    found: dict[str, Any] | None = node.get("tenants", {}).get(tenant)
    return found or tenant_share(dict.fromkeys(ROLES, 0), 0, 0, 0)


def tenant_node(node: dict[str, Any], tenant: str) -> dict[str, Any]:
    """What an operator sees of a node: its tenant's share, and whether the node takes
    sockets; nothing of other tenants."""
    share = _share(node, tenant)
    total = sum(share["connections"].values())
    return {
        "node": node["node"],
        "tenant": tenant,
        "connections": {"total": total, **share["connections"]},
        "transports": _transports(share.get("transports")),
        "rooms": share["rooms"],
        "messages": share["messages"],
        "draining": node["draining"],
    }


def tenant_cluster(nodes: list[dict[str, Any]], tenant: str) -> dict[str, Any]:
    """A tenant's share of every live node, summed."""
    connections = {"total": 0, **dict.fromkeys(ROLES, 0)}
    transports = dict.fromkeys(TRANSPORTS, 0)
    messages = {"in": 0, "out": 0}
    rooms = 0
    for node in nodes:
        share = _share(node, tenant)
        for name, count in _transports(share.get("transports")).items():
            transports[name] += count
        for role, count in share["connections"].items():
            connections[role] = connections.get(role, 0) + count
            connections["total"] += count
        for name in messages:
            messages[name] += share["messages"][name]
        rooms += share["rooms"]
    return {
        "tenant": tenant,
        "connections": connections,
        "transports": transports,
        "rooms": rooms,
        "messages": messages,
        "nodes": len(nodes),
    }
