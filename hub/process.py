"""What a node does to its process once it runs: the collector, the metrics exporter."""

from __future__ import annotations

import gc
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server


def tune_collector(threshold: int) -> None:
    """Long-lived sockets make every full collection expensive: collect rarely, and keep
    what start-up allocated out of the collector's sight. `hub serve` starts with the
    collector off (hub/cli.py): it is on from here."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, 50, 100)
    gc.enable()


class Exporter:
    """`/metrics` on a port of its own (`HUB_METRICS_PORT`), without the stats key: a
    thread of prometheus-client's, reading figures that are copied whole."""

    def __init__(self, port: int, registry: CollectorRegistry) -> None:
        server, _ = start_http_server(port, registry=registry)
        self._server: WSGIServer = server

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
