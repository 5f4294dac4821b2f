"""Logging set-up that never writes a token: query strings are cut from server log lines."""

from __future__ import annotations

import logging
import re

_QUERY = re.compile(r"\?[^\s\"]*")


class RedactQuery(logging.Filter):
    """uvicorn logs request paths with their query string, where browsers carry tokens."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "?" in message:
            record.msg = _QUERY.sub("?[redacted]", message)
            record.args = None
        return True


def configure() -> None:
    """Give the hub's logger uvicorn's handlers and level, and redact every query string."""
    server = logging.getLogger("uvicorn.error")
    hub = logging.getLogger("hub")
    hub.setLevel(server.getEffectiveLevel())
    hub.propagate = False
    for handler in server.handlers or logging.getLogger("uvicorn").handlers:
        hub.addHandler(handler)
    for name in ("uvicorn.error", "uvicorn.access", "hub"):
        logging.getLogger(name).addFilter(RedactQuery())
