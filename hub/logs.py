"""Logging set-up that never writes a token: every query string in a log line is parsed,
and the values of its token parameters (and anything shaped like a JWT) are redacted."""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, quote

REDACTED = "[redacted]"
SECRET_PARAMS = frozenset({"token", "access_token", "jwt", "key"})
_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_QUERY = re.compile(r"\?\S*")


def redact_query(query: str) -> str:
    """`query` (without its `?`) with secret values replaced; names and order kept."""
    pairs = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        secret = name.lower() in SECRET_PARAMS or _JWT.fullmatch(value) is not None
        pairs.append(f"{quote(name, safe='')}={REDACTED if secret else quote(value, safe='')}")
    return "&".join(pairs)


def redact_path(path: str) -> str:
    """A request path with its query string redacted."""
    base, mark, query = path.partition("?")
    return f"{base}?{redact_query(query)}" if mark else path


class RedactQuery(logging.Filter):
    """uvicorn logs request paths with their query string, where browsers carry tokens.

    Arguments are redacted one by one (the access formatter needs its arguments whole);
    a message without arguments has each `?…` up to the next space redacted.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                redact_path(arg) if isinstance(arg, str) and "?" in arg else arg
                for arg in record.args
            )
        elif isinstance(record.msg, str) and "?" in record.msg and not record.args:
            record.msg = _QUERY.sub(lambda found: "?" + redact_query(found[0][1:]), record.msg)
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
