"""Logging set-up that never writes a token: every query string in a log line is parsed,
and the values of its token parameters (and anything shaped like a JWT) are redacted
(hub/redact.py).

With `HUB_LOG_FORMAT=json` every line is one JSON object (python-json-logger), naming the
node, and the socket (conn, sub, role, tenant) when the line is about one, so that a log
pipeline can ship and search lines without parsing text. The node's lifecycle decisions
(`decision`) carry an `event` and their figures as fields, in both formats.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from uvicorn.config import LOGGING_CONFIG

from hub.config import Settings
from hub.redact import redact_path, redact_text


def decision(
    logger: logging.Logger, event: str, text: str, level: int = logging.INFO, **fields: Any
) -> None:
    """One line for a lifecycle decision of the node (`event`, e.g. `nodes_reaped`): the
    sentence, then its fields as `key=value`, which a JSON line also carries as keys."""
    shown = " ".join(f"{key}={value}" for key, value in fields.items())
    logger.log(
        level, "%s [%s]", text, f"event={event} {shown}".strip(), extra={"event": event, **fields}
    )


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
            record.msg = redact_text(record.msg)
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


class Context(logging.Filter):
    """Gives every record the node's id, for the JSON formatter to write. A line about a
    socket carries the socket's fields itself (`extra=session.log_fields`): looked up at
    the log call, they cost an idle socket nothing.

    `node` None is the id this process takes by default: with `--workers N` each worker
    builds its own filter from the same config, and is a node of its own.
    """

    def __init__(self, node: str | None = None) -> None:
        super().__init__()
        default = Settings.model_fields["node_id"].get_default(call_default_factory=True)
        self.node: str = node if node is not None else default

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node
        return True


_JSON_FORMATTER = {
    "()": "pythonjsonlogger.orjson.OrjsonFormatter",
    "fmt": "%(levelname)s %(name)s %(message)s",
    "rename_fields": {
        "levelname": "level",
        "name": "logger",
        "exc_info": "traceback",
        "stack_info": "stack",
    },
    "timestamp": "time",
    # uvicorn's coloured copy of some messages is for terminals, not for a pipeline.
    "reserved_attrs": [*RESERVED_ATTRS, "color_message"],
}


def uvicorn_log_config(settings: Settings) -> dict[str, Any]:
    """uvicorn's `log_config` for `HUB_LOG_FORMAT`: uvicorn's own for text; for json the
    same loggers and streams, each line one JSON object, and the root logger too (asyncio,
    websockets, redis), so that no line of another shape gets in.

    Text needs uvicorn's config passed as it is: `log_config=None` would configure nothing.
    """
    if settings.log_format == "text":
        return copy.deepcopy(LOGGING_CONFIG)
    node = settings.node_id if "node_id" in settings.model_fields_set else None

    def handler(stream: str) -> dict[str, Any]:
        return {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "filters": ["context"],
            "stream": f"ext://sys.{stream}",
        }

    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "hub.logs.Context", "node": node}},
        "formatters": {"json": copy.deepcopy(_JSON_FORMATTER)},
        "handlers": {"default": handler("stderr"), "access": handler("stdout")},
        "loggers": copy.deepcopy(LOGGING_CONFIG["loggers"]),
        "root": {"handlers": ["default"], "level": "WARNING"},
    }
