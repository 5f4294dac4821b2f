"""Prometheus metrics of one node, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.connections = Gauge(
            "hub_connections", "Open WebSockets on this node", ["role"], registry=self.registry
        )
        self.rooms = Gauge("hub_rooms", "Rooms with a member on this node", registry=self.registry)
        self.messages_in = Counter(
            "hub_messages_in", "Events accepted for publishing by this node", registry=self.registry
        )
        self.messages_out = Counter(
            "hub_messages_out", "Event frames written to local sockets", registry=self.registry
        )
        self.dropped = Counter(
            "hub_messages_dropped",
            "Messages not delivered, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.slow_consumers = Counter(
            "hub_slow_consumers",
            "Sockets closed with 4009 because their outgoing queue overflowed",
            registry=self.registry,
        )
        self.broker_up = Gauge(
            "hub_broker_up", "1 when the broker is reachable", registry=self.registry
        )

        self.presence_writes = Counter(
            "hub_presence_writes",
            "Presence changes and heartbeats written to Redis",
            registry=self.registry,
        )
        self.presence_round_trips = Counter(
            "hub_presence_round_trips",
            "Round trips to Redis that carried presence writes (one per batch)",
            registry=self.registry,
        )
        self.devices_reaped = Counter(
            "hub_devices_reaped",
            "Devices of dead nodes this node reported offline (reason node_lost)",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
