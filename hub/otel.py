"""The tracer of a node that traces: OpenTelemetry's SDK, exporting over OTLP/HTTP.

Spans leave in batches from the SDK's own thread (`BatchSpanProcessor`): its queue is
bounded, so a collector that is down or slow costs spans, never memory or the event loop.
OpenTelemetry's own variables apply (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_*`, `OTEL_TRACES_SAMPLER`); `HUB_OTEL_ENDPOINT` and
`HUB_OTEL_SAMPLE_RATIO` win where they are set.

Only a sampled span's context is carried to the other nodes: an unsampled publish sends
the same bytes as an untraced one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Mapping, Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import (
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    OTELResourceDetector,
    Resource,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from hub import __version__, envelope
from hub.config import Settings
from hub.disconnect import Disconnect
from hub.errors import HubError
from hub.redact import safe_url
from hub.rooms import RoomKey
from hub.tracing import UNTRACED, FanOutTrace, PublishTrace, Tracer

log = logging.getLogger("hub")

STOP_SECONDS = 2.0
"""How long a stopping node may spend sending its last spans."""
SELDOM = 60.0
"""Seconds between two of the SDK's log lines of one kind."""
_PROPAGATOR = TraceContextTextMapPropagator()
_TRACEPARENT = "traceparent"


def _sampler(settings: Settings) -> Sampler | None:
    """With `HUB_OTEL_SAMPLE_RATIO` the hub draws for the traces that start here itself
    (`OpenTelemetryTracer._root_sampled`), so the SDK keeps every root it is handed, and
    follows a caller's `traceparent` for its own; unset, the SDK's choice
    (`OTEL_TRACES_SAMPLER`, else all)."""
    return None if settings.otel_sample_ratio is None else ParentBased(ALWAYS_ON)


def _failed(span: Span, error: BaseException) -> None:
    code = error.code.value if isinstance(error, HubError) else type(error).__name__
    span.set_attribute("hub.error", code)
    span.set_status(Status(StatusCode.ERROR, str(error)))


class _Publish(PublishTrace):
    """The publish's span and its broker step, a child, whose context goes with the event."""

    __slots__ = ("_outer", "_step", "carrier")

    def __init__(self, outer: Span, step: Span) -> None:
        self._outer = outer
        self._step = step
        self.carrier = b""
        if step.get_span_context().trace_flags.sampled:
            carrier: dict[str, str] = {}
            _PROPAGATOR.inject(carrier, trace.set_span_in_context(step))
            self.carrier = carrier[_TRACEPARENT].encode()

    def published(self, ids: Mapping[str, str | None], replayed: bool) -> None:
        outer = self._outer
        outer.set_attribute("hub.ids", [event_id for event_id in ids.values() if event_id])
        if replayed:
            outer.set_attribute("hub.replayed", True)
        self._end()

    def failed(self, error: BaseException) -> None:
        _failed(self._step, error)
        _failed(self._outer, error)
        self._end()

    def _end(self) -> None:
        self._step.end()
        self._outer.end()


class _FanOut(FanOutTrace):
    __slots__ = ("_span", "exemplar")

    def __init__(self, span: Span, ts_ms: int) -> None:
        self._span = span
        span.set_attribute("hub.latency_ms", max(0, int(time.time() * 1000) - ts_ms))
        context = span.get_span_context()
        self.exemplar = (
            {"trace_id": trace.format_trace_id(context.trace_id)}
            if context.trace_flags.sampled
            else None
        )

    def done(self, sockets: int) -> None:
        self._span.set_attribute("hub.sockets", sockets)
        self._span.end()


class OpenTelemetryTracer(Tracer):
    on = True

    def __init__(self, settings: Settings) -> None:
        ours = {SERVICE_NAME: "hub", SERVICE_INSTANCE_ID: settings.node_id}
        # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, when set, say who this is.
        resource = Resource.create(ours).merge(OTELResourceDetector().detect())
        _quiet_sdk()
        self._provider = TracerProvider(
            sampler=_sampler(settings), resource=resource, shutdown_on_exit=False
        )
        endpoint = settings.otel_endpoint
        traces = None if endpoint is None else f"{endpoint.rstrip('/')}/v1/traces"
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces)))
        self._tracer = self._provider.get_tracer("hub", __version__)
        self._ratio = settings.otel_sample_ratio
        where = "the OTEL_EXPORTER_OTLP_* endpoint" if traces is None else safe_url(traces)
        log.info("tracing to %s", where)

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
        context = Context()
        if parent is not None and _TRACEPARENT in parent:
            context = _PROPAGATOR.extract(parent)
        if not trace.get_current_span(context).get_span_context().is_valid:
            # No caller's trace (none, or a malformed one): the trace starts here.
            if not self._root_sampled():
                return UNTRACED
            context = Context()
        attributes: dict[str, str | Sequence[str]] = {
            "hub.tenant": tenant,
            "hub.rooms": list(rooms),
            "hub.event": event,
        }
        if conn is not None:
            attributes["hub.conn"] = conn
        outer = self._tracer.start_span(
            f"hub.{source}", context, SpanKind.SERVER, attributes=attributes
        )
        step = self._tracer.start_span(
            "hub.broker.publish",
            trace.set_span_in_context(outer),
            SpanKind.PRODUCER,
        )
        return _Publish(outer, step)

    def _root_sampled(self) -> bool:
        """Whether a trace that starts here is kept: with the hub's ratio, drawn before any
        span is made (the SDK's ratio sampler would draw the same odds from the new trace
        id, after building the span), so an unsampled publish costs one draw."""
        return self._ratio is None or random.random() < self._ratio

    def fan_out(self, key: RoomKey, carrier: bytes, payload: bytes) -> FanOutTrace:
        context = _PROPAGATOR.extract({_TRACEPARENT: carrier.decode("ascii", "replace")})
        span = self._tracer.start_span(
            "hub.fan_out",
            context,
            SpanKind.CONSUMER,
            attributes={"hub.tenant": key.tenant, "hub.room": key.room},
        )
        return _FanOut(span, envelope.ts_of(payload))

    def refused(self, reason: str, status: int, client: str | None) -> None:
        if not self._root_sampled():
            return
        span = self._tracer.start_span(
            "hub.handshake",
            Context(),
            SpanKind.SERVER,
            attributes={"hub.refusal": reason, "hub.status": status},
        )
        if client is not None:
            span.set_attribute("client.address", client)
        span.set_status(Status(StatusCode.ERROR, reason))
        span.end()

    def closed(self, fields: Mapping[str, str | None], cause: Disconnect) -> None:
        if not self._root_sampled():
            return
        attributes = {f"hub.{name}": value for name, value in fields.items() if value is not None}
        span = self._tracer.start_span(
            "hub.socket.close",
            Context(),
            SpanKind.INTERNAL,
            attributes={
                **attributes,
                "hub.close_code": int(cause.code),
                "hub.close_reason": cause.reason,
                "hub.offline_reason": cause.gone.value,
            },
        )
        span.end()

    async def stop(self) -> None:
        """The SDK's shutdown sends the spans queued, and may wait on a collector that does
        not answer for far longer than a node stops in: it runs in a thread of its own,
        left behind after `STOP_SECONDS`."""
        ending = threading.Thread(target=self._provider.shutdown, name="otel-stop", daemon=True)
        ending.start()
        await asyncio.to_thread(ending.join, STOP_SECONDS)


class _Seldom(logging.Handler):
    """OpenTelemetry's own log lines, through the hub's log, each kind at most once a
    `SELDOM` seconds: a collector that is down would be a line for every span dropped."""

    def __init__(self, to: logging.Logger) -> None:
        super().__init__()
        self._to = to
        self._last: dict[tuple[str, object], float] = {}
        """When each kind (logger, message template: a few) last went through."""

    def emit(self, record: logging.LogRecord) -> None:
        kind, now = (record.name, record.msg), time.monotonic()
        if now - self._last.get(kind, -SELDOM) >= SELDOM:
            self._last[kind] = now
            self._to.handle(record)


def _quiet_sdk() -> None:
    sdk = logging.getLogger("opentelemetry")
    sdk.propagate = False
    if not any(isinstance(handler, _Seldom) for handler in sdk.handlers):
        sdk.addHandler(_Seldom(log))
