"""Prometheus metrics of one node, in a registry of its own.

What `/v1/stats` also reports (connections, rooms, messages, queue, capacity, draining,
broker) is read from the node's `Figures` at scrape time, so both always agree and the hot
paths only bump plain integers. Rare events are ordinary prometheus-client counters.
`docs/operations.md` describes every metric.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from hub.stats import Figures

# `*_created` series double the output and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
WEBHOOK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0)
"""A webhook attempt: a receiver nearby answers in milliseconds; none gives up at 15 s."""

_HELP = {
    "hub_tasks": "Tasks on the node's event loop (every socket has some)",
    "hub_delivery_latency_seconds": (
        "From the accepting node taking an event to this node writing it to its sockets"
    ),
    "hub_handshakes_refused": (
        "Sockets refused: full (1013), draining (1012), rate_limited and quota (HTTP 429)"
    ),
    "hub_refusals": (
        "Requests refused, by error code: error frames on sockets and REST error answers"
    ),
    "hub_tenant_limited": "Publishes refused by a tenant bound: publish_bytes or history_rooms",
    "hub_slow_consumers": "Sockets closed with 4009 because their outgoing queue overflowed",
    "hub_presence_writes": "Presence changes and heartbeats written to Redis",
    "hub_presence_round_trips": "Round trips to Redis that carried presence writes (one per batch)",
    "hub_receipts": "Delivery receipts stored and announced, by status",
    "hub_state_publishes": "Events published that are part of a room's state (HUB_STATE_EVENTS)",
    "hub_idempotent_replays": (
        "Broadcasts answered from an earlier one with the same Idempotency-Key"
    ),
    "hub_token_refreshes": "Tokens refreshed on open sockets",
    "hub_canary_round_trip_seconds": (
        "From this node publishing its canary through Redis to hearing it back, by shard"
    ),
    "hub_deaf_subscribers": (
        "Redis subscriber connections rebuilt because their canary went unheard"
    ),
    "hub_devices_reaped": "Devices of dead nodes this node reported offline (reason node_lost)",
    "hub_webhook_pending": "Webhook messages this node holds pending, every endpoint together",
    "hub_webhook_oldest_pending_seconds": (
        "Age of the oldest webhook message this node holds pending; 0 when none"
    ),
    "hub_webhook_deliveries": (
        "Webhook messages finished, by outcome: delivered, failed (retried for "
        "HUB_WEBHOOK_RETRY_HOURS, or over the backlog), gone (410: endpoint removed)"
    ),
    "hub_webhook_retries": "Webhook attempts after a message's first",
    "hub_webhook_attempt_seconds": "Duration of one webhook attempt, until the answer's head",
}
"""The help text of every metric the node keeps itself (the live figures' are with `_Live`),
so that the constructor reads as the list of what is kept."""


class Metrics:
    """The node's Prometheus registry: counters kept here, live figures read at scrape time."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=registry)

        def counter(name: str, *labels: str) -> Counter:
            return Counter(name, _HELP[name], labels, registry=registry)

        self._tasks = Gauge("hub_tasks", _HELP["hub_tasks"], registry=registry)
        self.delivery_latency = Histogram(
            "hub_delivery_latency_seconds",
            _HELP["hub_delivery_latency_seconds"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.handshakes_refused = counter("hub_handshakes_refused", "reason")
        self.refusals = counter("hub_refusals", "code")
        self.tenant_limited = counter("hub_tenant_limited", "bound")
        self.slow_consumers = counter("hub_slow_consumers")
        self.presence_writes = counter("hub_presence_writes")
        self.presence_round_trips = counter("hub_presence_round_trips")
        self.receipts = counter("hub_receipts", "status")
        self.state_publishes = counter("hub_state_publishes")
        self.idempotent_replays = counter("hub_idempotent_replays")
        self.token_refreshes = counter("hub_token_refreshes")
        self.canary_round_trip = Gauge(
            "hub_canary_round_trip_seconds",
            _HELP["hub_canary_round_trip_seconds"],
            ["shard"],
            registry=registry,
        )
        self.deaf_subscribers = counter("hub_deaf_subscribers")
        self.devices_reaped = counter("hub_devices_reaped")
        self.webhook_pending = Gauge(
            "hub_webhook_pending", _HELP["hub_webhook_pending"], registry=registry
        )
        self.webhook_oldest_pending = Gauge(
            "hub_webhook_oldest_pending_seconds",
            _HELP["hub_webhook_oldest_pending_seconds"],
            registry=registry,
        )
        self.webhook_deliveries = counter("hub_webhook_deliveries", "outcome")
        self.webhook_retries = counter("hub_webhook_retries")
        self.webhook_attempt_seconds = Histogram(
            "hub_webhook_attempt_seconds",
            _HELP["hub_webhook_attempt_seconds"],
            buckets=WEBHOOK_BUCKETS,
            registry=registry,
        )

    def watch(self, figures: Callable[[], Figures]) -> None:
        """Export the node's live figures, read from `figures` at every scrape."""
        self.registry.register(_Live(figures))

    def count_tasks(self, loop: asyncio.AbstractEventLoop) -> None:
        """Count `loop`'s tasks at each scrape (about 7 ms per 40,000), from whichever
        thread serves it: asyncio copes with its task set changing meanwhile."""
        self._tasks.set_function(lambda: len(asyncio.all_tasks(loop)))

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The metrics and their content type: OpenMetrics, with the traces' exemplars of
        the delivery latency, when the scraper asks for it (Prometheus does)."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


class _Live(Collector):
    """Exports the node's figures as they are at the scrape."""

    def __init__(self, figures: Callable[[], Figures]) -> None:
        self._figures = figures

    def collect(self) -> Iterator[Metric]:
        figures = self._figures()
        connections = GaugeMetricFamily(
            "hub_connections", "Open sessions on this node, sockets and streams", labels=["role"]
        )
        for role, count in figures.connections.items():
            connections.add_metric([role], count)
        yield connections
        transports = GaugeMetricFamily(
            "hub_transport_connections",
            "Open sessions on this node by what carries them (websocket, stream)",
            labels=["transport"],
        )
        for transport, count in figures.transports.items():
            transports.add_metric([transport], count)
        yield transports
        yield GaugeMetricFamily(
            "hub_capacity_connections",
            "Sockets this node accepts before refusing with 1013 (HUB_MAX_CONNECTIONS)",
            value=figures.max_connections,
        )
        yield GaugeMetricFamily(
            "hub_rooms", "Rooms with a member on this node", value=figures.rooms
        )
        yield CounterMetricFamily(
            "hub_messages_in",
            "Events this node accepted for publishing (socket, REST, device heartbeats)",
            value=figures.messages["in"],
        )
        yield CounterMetricFamily(
            "hub_messages_out",
            "Event frames written to this node's sockets",
            value=figures.messages["out"],
        )
        dropped = CounterMetricFamily(
            "hub_messages_dropped", "Messages not delivered, by reason", labels=["reason"]
        )
        for reason, count in figures.dropped.items():
            dropped.add_metric([reason], count)
        yield dropped
        yield GaugeMetricFamily(
            "hub_send_queue_bytes",
            "Bytes written to sockets and not yet taken by the kernel, all sockets together",
            value=figures.queue_bytes,
        )
        yield GaugeMetricFamily(
            "hub_broker_up", "1 when the broker is reachable", value=int(figures.broker_up)
        )
        yield GaugeMetricFamily(
            "hub_draining", "1 while the node drains", value=int(figures.draining)
        )
