"""A local OpenTelemetry collector's front door: OTLP/HTTP traces, received and kept.

The tests read the spans it kept; a benchmark with tracing on sends its nodes' spans here,
so their export costs what it would against a real collector.

    python -m loadtest.otlp --port 4318
"""

from __future__ import annotations

import argparse
import gzip
import signal
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

MAX_BODY = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    """Empty for a root span."""
    kind: int
    """`opentelemetry.proto.trace.v1.Span.SpanKind`: 1 internal, 2 server, 4 producer, 5
    consumer."""
    attributes: dict[str, Any]
    service: dict[str, Any]
    """The resource's attributes: `service.name`, `service.instance.id`…"""
    status: int
    """0 unset, 1 ok, 2 error."""


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(each) for each in value.array_value.values]
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def spans_of(body: bytes) -> list[ReceivedSpan]:
    """The spans of one `ExportTraceServiceRequest`."""
    request = ExportTraceServiceRequest.FromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        service = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        span.name,
                        span.trace_id.hex(),
                        span.span_id.hex(),
                        span.parent_span_id.hex(),
                        span.kind,
                        _attributes(span.attributes),
                        service,
                        span.status.code,
                    )
                )
    return spans


class OtlpReceiver:
    """Takes `POST /v1/traces` on a loopback port; keeps the newest `keep` spans."""

    def __init__(self, port: int = 0, keep: int = 10_000) -> None:
        receiver = self
        self._keep = keep
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self.received = 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if self.path != "/v1/traces" or not 0 < length <= MAX_BODY:
                    self.send_error(404 if self.path != "/v1/traces" else 400)
                    return
                body = self.rfile.read(length)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver._take(spans_of(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: a benchmark sends many."""

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _take(self, spans: list[ReceivedSpan]) -> None:
        with self._lock:
            self.received += len(spans)
            kept = self._spans + spans
            self._spans = kept[max(0, len(kept) - self._keep) :]

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def main() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args()
    receiver = OtlpReceiver(args.port, keep=0).start()
    print(f"receiving traces on {receiver.url}/v1/traces", flush=True)
    # SIGTERM too: a shell starts background commands with SIGINT ignored.
    signal.sigwait({signal.SIGINT, signal.SIGTERM})
    print(f"received {receiver.received} spans", flush=True)
    receiver.stop()


if __name__ == "__main__":
    main()
