"""What the hub tells a tracer, the tracer it has when tracing is off, and whether it
traces (`hub.assembly` chooses the tracer).

Tracing is off unless a collector is named (`HUB_OTEL_ENDPOINT`, or OpenTelemetry's own
`OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); only then is
OpenTelemetry imported (`hub.otel`, the `tracing` extra). Off, every call here does nothing
and a publish carries no trace, so the bytes every node gets are those of an untraced hub.

A traced event crosses nodes with its broker step's `traceparent` in front of the event's
bytes in the pub/sub message only (`hub.envelope.traced`): the history, the state and every
frame a client gets stay the event alone.
"""

from __future__ import annotations

import importlib.util
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

from typing_extensions import override

from hub.config import Settings
from hub.disconnect import Disconnect
from hub.rooms import RoomKey

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


class PublishTrace:
    """One publish's spans (the REST broadcast or socket publish, and its broker step),
    ended with the publish's outcome. This one records nothing and carries nothing."""

    carrier = b""
    """The broker step's trace context, to go in front of the event in pub/sub."""

    def published(self, ids: Mapping[str, str | None], replayed: bool) -> None:
        """The broker took the events, or answered as the key's first publish did."""

    def failed(self, error: BaseException) -> None:
        """Nothing was published."""


class FanOutTrace:
    """One traced event handed to this node's members of its room."""

    exemplar: dict[str, str] | None = None
    """The trace, as a Prometheus exemplar of the event's delivery latency."""

    def done(self, sockets: int) -> None:
        """Written to `sockets` local members."""


UNTRACED = PublishTrace()
_NO_FAN_OUT = FanOutTrace()


class Tracer(ABC):
    """What the hub tells a tracer."""

    on: bool

    @abstractmethod
    def publish(
        self,
        source: str,
        tenant: str,
        rooms: Sequence[str],
        event: str,
        *,
        parent: Mapping[str, str] | None = None,
        conn: str | None = None,
    ) -> PublishTrace:
        """Spans for a publish from `source` (`broadcast`: REST, whose headers are `parent`;
        `socket`: the publishing socket's `conn`)."""

    @abstractmethod
    def fan_out(self, key: RoomKey, carrier: bytes, payload: bytes) -> FanOutTrace:
        """A span for delivering `payload` (an event whose publish sent `carrier`) here."""

    @abstractmethod
    def refused(self, reason: str, status: int, client: str | None) -> None:
        """A handshake refused: `status` is its HTTP status or close code."""

    @abstractmethod
    def closed(self, fields: Mapping[str, str | None], cause: Disconnect) -> None:
        """A socket closed (its log fields), and why."""

    @abstractmethod
    async def stop(self) -> None:
        """Send what is still to go, briefly; drop the rest."""


class Untraced(Tracer):
    """The tracer of a hub that traces nothing."""

    on = False

    @override
    def publish(
        self,
        source: str,
        tenant: str,
        rooms: Sequence[str],
        event: str,
        *,
        parent: Mapping[str, str] | None = None,
        conn: str | None = None,
    ) -> PublishTrace:
        return UNTRACED

    @override
    def fan_out(self, key: RoomKey, carrier: bytes, payload: bytes) -> FanOutTrace:
        return _NO_FAN_OUT

    @override
    def refused(self, reason: str, status: int, client: str | None) -> None:
        pass

    @override
    def closed(self, fields: Mapping[str, str | None], cause: Disconnect) -> None:
        pass

    @override
    async def stop(self) -> None:
        pass


def tracing_wanted(settings: Settings, environ: Mapping[str, str]) -> bool:
    """A collector is named and OpenTelemetry is not switched off by its own variables."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return settings.otel_endpoint is not None or any(environ.get(v) for v in ENDPOINT_VARIABLES)


class TracingUnavailable(RuntimeError):
    """Tracing is asked for, and OpenTelemetry is not installed."""


def check_tracing(settings: Settings, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the node traces; `TracingUnavailable` when it should and cannot."""
    if not tracing_wanted(settings, environ):
        return False
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        raise TracingUnavailable(
            "tracing is asked for (HUB_OTEL_ENDPOINT or OTEL_EXPORTER_OTLP_*ENDPOINT) but "
            "OpenTelemetry is not installed: pip install 'signage-hub[tracing]'"
        )
    return True
