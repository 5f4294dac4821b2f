"""A real-time WebSocket hub for fleets of signage players and their dashboards."""

__version__ = "0.1.0"
