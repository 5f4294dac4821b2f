"""What of a URL or a log line is secret, and its redaction: tokens in query strings (where
browsers carry them), anything shaped like a JWT, and passwords in URLs. Pure, so that the
client library and the server's logs share it without loading each other."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

REDACTED = "[redacted]"
SECRET_PARAMS = frozenset({"token", "access_token", "jwt", "key", "password"})
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


def redact_text(text: str) -> str:
    """A free-form line with each `?…` (up to the next space) redacted."""
    return _QUERY.sub(lambda found: "?" + redact_query(found[0][1:]), text)


def safe_url(url: str) -> str:
    """`url` with its password, if any, shown as `***`, and its query redacted."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    if parts.query:
        parts = parts._replace(query=redact_query(parts.query))
    return urlunsplit(parts)
