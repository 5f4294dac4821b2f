"""Tracing: one broadcast through two nodes is one trace in a local OTLP/HTTP receiver;
socket publishes, refused handshakes and closes are spans; an untraced publish, or an
unsampled one, carries the same bytes as a hub without tracing."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from hub import envelope
from hub.assembly import choose_tracer
from hub.broker import MemoryBroker
from hub.broker.base import Deliver, Lost, Outgoing
from hub.config import Settings
from hub.history import Retention
from hub.rooms import RoomKey
from hub.tracing import TracingUnavailable, Untraced, check_tracing
from loadtest.otlp import OtlpReceiver, ReceivedSpan
from tests.conftest import NodeFactory, Redis
from tests.inprocess import Socket, running
from tests.inprocess import settings as inprocess_settings
from tests.support import Client, eventually, free_port, token

OPERATOR = token("operator", "o1")
DASHBOARD = token("dashboard", "d1")
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50"}
"""Spans leave the node every 50 ms, not every 5 s."""
SERVER, PRODUCER, CONSUMER, ERROR = 2, 4, 5, 2


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """Asked for before the nodes, it outlives them: they send it their last spans."""
    running = OtlpReceiver().start()
    yield running
    running.stop()


def _traceparent() -> tuple[str, str, str]:
    """A caller's trace id, span id, and the `traceparent` header of its sampled span."""
    trace, span = secrets.token_hex(16), secrets.token_hex(8)
    return trace, span, f"00-{trace}-{span}-01"


async def _event(socket: Socket) -> dict[str, Any]:
    while (frame := await socket.next())["type"] != "event":
        pass
    return frame


def _of(receiver: OtlpReceiver, trace: str) -> list[ReceivedSpan]:
    return [span for span in receiver.spans if span.trace_id == trace]


def _one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    named = [span for span in spans if span.name == name]
    assert len(named) == 1, [span.name for span in spans]
    return named[0]


async def test_a_broadcast_through_two_nodes_is_one_trace(
    receiver: OtlpReceiver, hub_node: NodeFactory, redis: Redis
) -> None:
    """The REST call's span (a child of the caller's), its broker step, and a fan-out span
    on each node with members, all in the caller's trace; the clients' frames and the
    history are the event alone."""
    traced = {**redis.settings, "otel_endpoint": receiver.url}
    a = hub_node("a", redis.url, environ=FAST_EXPORT, **traced)
    b = hub_node("b", redis.url, environ=FAST_EXPORT, **traced)
    on_a = await Client.connect(a, token("dashboard", "da"))
    on_b = await Client.connect(b, token("dashboard", "db"))
    for client in (on_a, on_b):
        await client.subscribe("location:lobby")
    trace, caller, header = _traceparent()
    body = {"room": "location:lobby", "event": "alert", "data": {"level": "info", "message": "m"}}
    answer = httpx.post(
        f"{a.url}/v1/broadcast",
        json=body,
        headers={"Authorization": f"Bearer {OPERATOR}", "traceparent": header},
    )
    assert answer.status_code == 202, answer.text
    event_id = answer.json()["ids"]["location:lobby"]
    seen = [await client.next_event() for client in (on_a, on_b)]
    assert seen[0] == seen[1]
    assert set(seen[0]) == {"type", "room", "event", "data", "ts", "id"}
    history = b.get("/v1/rooms/location:lobby/history", token("dashboard", "h")).json()
    assert history["events"] == seen[:1]

    def whole() -> bool:
        """Each node exports on its own schedule, and the REST span ends after the fan-out
        may have begun: every span is waited for, not only the last expected."""
        names = sorted(span.name for span in _of(receiver, trace))
        return names == ["hub.broadcast", "hub.broker.publish", "hub.fan_out", "hub.fan_out"]

    await eventually(whole, 10, "the broadcast's spans on both nodes")
    spans = _of(receiver, trace)
    broadcast = _one(spans, "hub.broadcast")
    assert (broadcast.parent_id, broadcast.kind) == (caller, SERVER)
    assert broadcast.service["service.instance.id"] == "a"
    assert broadcast.attributes["hub.tenant"] == "acme"
    assert broadcast.attributes["hub.rooms"] == ["location:lobby"]
    assert broadcast.attributes["hub.event"] == "alert"
    assert broadcast.attributes["hub.ids"] == [event_id]
    step = _one(spans, "hub.broker.publish")
    assert (step.parent_id, step.kind) == (broadcast.span_id, PRODUCER)
    fan_outs = {span.service["service.instance.id"]: span for span in spans if span.kind == 5}
    assert set(fan_outs) == {"a", "b"}
    for span in fan_outs.values():
        assert (span.name, span.parent_id) == ("hub.fan_out", step.span_id)
        assert span.attributes["hub.room"] == "location:lobby"
        assert span.attributes["hub.sockets"] == 1
        assert span.attributes["hub.latency_ms"] >= 0
    await on_a.close()
    await on_b.close()


async def test_socket_publishes_refused_handshakes_and_closes_are_spans(
    receiver: OtlpReceiver, hub_node: NodeFactory
) -> None:
    node = hub_node("solo", environ=FAST_EXPORT, otel_endpoint=receiver.url)
    listener = await Client.connect(node, token("dashboard", "d1"))
    await listener.subscribe("location:lobby")
    publisher = await Client.connect(node, token("dashboard", "d2", publish=["location:*"]))
    ack = await publisher.request("publish", room="location:lobby", event="x.note", data={})
    assert ack["type"] == "ack"
    await listener.next_event()
    with pytest.raises(InvalidStatus):
        await connect(f"{node.ws_url}?token=not-a-token")
    await publisher.close()

    def named(name: str) -> list[ReceivedSpan]:
        return [span for span in receiver.spans if span.name == name]

    await eventually(
        lambda: all(named(name) for name in ("hub.fan_out", "hub.handshake", "hub.socket.close")),
        10,
        "the node's spans",
    )
    publish = _one(receiver.spans, "hub.socket")
    assert publish.attributes["hub.conn"] == publisher.welcome["conn"]
    assert publish.attributes["hub.rooms"] == ["location:lobby"]
    assert publish.attributes["hub.ids"] == [ack["id"]]
    step = _one(receiver.spans, "hub.broker.publish")
    assert step.parent_id == publish.span_id
    fan_out = _one(receiver.spans, "hub.fan_out")
    assert (fan_out.trace_id, fan_out.parent_id) == (publish.trace_id, step.span_id)
    refused = _one(receiver.spans, "hub.handshake")
    assert refused.attributes["hub.refusal"] == "unauthorized"
    assert refused.attributes["hub.status"] == 401
    assert refused.status == ERROR
    openmetrics = {"Accept": "application/openmetrics-text; version=1.0.0"}
    scraped = httpx.get(f"{node.url}/metrics", headers=openmetrics).text
    assert f'# {{trace_id="{fan_out.trace_id}"}}' in scraped
    assert "# {" not in node.get("/metrics").text
    closed = _one(receiver.spans, "hub.socket.close")
    assert closed.attributes["hub.conn"] == publisher.welcome["conn"]
    assert closed.attributes["hub.sub"] == "d2"
    assert closed.attributes["hub.offline_reason"] == "closed"
    await listener.close()


class _Recording(MemoryBroker):
    """Keeps the bytes it delivers, as pub/sub would carry them."""

    def __init__(self) -> None:
        super().__init__()
        self.delivered: list[bytes] = []

    async def connect(self, deliver: Deliver, lost: Lost) -> None:
        def recorded(key: RoomKey, payload: bytes) -> None:
            self.delivered.append(payload)
            deliver(key, payload)

        await super().connect(recorded, lost)


async def test_an_unsampled_publish_carries_nothing_and_a_callers_sampled_one_is_traced(
    receiver: OtlpReceiver,
) -> None:
    broker = _Recording()
    async with running(
        broker, otel_endpoint=receiver.url, otel_sample_ratio=0.0, history_size=0
    ) as hub:
        socket = await hub.connect(DASHBOARD)
        await socket.answer({"op": "subscribe", "room": "location:a", "ref": 1})
        parts = hub.parts
        unsampled = parts.tracer.publish("broadcast", "acme", ["location:a"], "x.a")
        await hub.publish("acme", ["location:a"], "x.a", {}, trace=unsampled)
        trace, _, header = _traceparent()
        sampled = parts.tracer.publish(
            "broadcast", "acme", ["location:a"], "x.b", parent={"traceparent": header}
        )
        await hub.publish("acme", ["location:a"], "x.b", {}, trace=sampled)
        frames = [await _event(socket) for _ in range(2)]
    assert [frame["event"] for frame in frames] == ["x.a", "x.b"]
    plain, carried = broker.delivered[-2:]
    assert plain.startswith(b'{"type":"event"')
    carrier, event = envelope.untraced(carried)
    assert carrier.startswith(f"00-{trace}-".encode())
    assert orjson.loads(event) == frames[1]
    await eventually(lambda: len(receiver.spans) >= 3, 10, "the sampled trace's spans")
    assert {span.trace_id for span in receiver.spans} == {trace}


async def test_the_sample_ratio_keeps_that_share_of_the_traces_started_here(
    receiver: OtlpReceiver,
) -> None:
    """Half, not a quarter: the hub's own draw is the only one a root span meets."""
    async with running(otel_endpoint=receiver.url, otel_sample_ratio=0.5) as hub:
        traces = [
            hub.parts.tracer.publish("socket", "acme", ["location:a"], "x.a") for _ in range(400)
        ]
        malformed = {"traceparent": "00-not-a-trace-01"}
        traces += [
            hub.parts.tracer.publish("broadcast", "acme", ["location:a"], "x.a", parent=malformed)
            for _ in range(400)
        ]
        kept = [sum(1 for trace in half if trace.carrier) for half in (traces[:400], traces[400:])]
        for trace in traces:
            trace.published({"location:a": None}, False)
    for count in kept:  # 200 expected, a malformed traceparent being no caller's trace
        assert 140 < count < 260, kept  # 6 standard deviations either side


async def test_a_node_that_does_not_trace_hands_on_a_traced_event_alone() -> None:
    broker = MemoryBroker()
    async with running(broker) as hub:
        socket = await hub.connect(DASHBOARD)
        await socket.answer({"op": "subscribe", "room": "location:a", "ref": 1})
        event = b'{"type":"event","room":"location:a","event":"x.a","data":{},"ts":1}'
        key = RoomKey("acme", "location:a")
        carrier = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01".encode()
        broker.publish_now([Outgoing.of(key, event, Retention(0, 1000))], carrier)
        assert await _event(socket) == {
            "type": "event",
            "room": "location:a",
            "event": "x.a",
            "data": {},
            "ts": 1,
        }


async def test_a_collector_that_is_down_costs_spans_not_publishes() -> None:
    collector = f"http://127.0.0.1:{free_port()}"
    async with running(otel_endpoint=collector) as hub:
        socket = await hub.connect(DASHBOARD)
        await socket.answer({"op": "subscribe", "room": "location:a", "ref": 1})
        for n in range(50):
            trace = hub.parts.tracer.publish("broadcast", "acme", ["location:a"], "x.a")
            await hub.publish("acme", ["location:a"], "x.a", {"n": n}, trace=trace)
        assert [(await _event(socket))["data"]["n"] for _ in range(50)] == list(range(50))


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_the_sdks_lines_go_through_the_hubs_log_once_a_while_each() -> None:
    """A node that traces hands OpenTelemetry's own lines to the hub's log, each kind once,
    however often the SDK says it (as it does for every span dropped)."""
    kept = _Kept()
    hub_log = logging.getLogger("hub")
    hub_log.addHandler(kept)
    tracer = choose_tracer(inprocess_settings(otel_endpoint=f"http://127.0.0.1:{free_port()}"), {})
    try:
        queue = logging.getLogger("opentelemetry.sdk._shared_internal")
        for _ in range(1000):
            queue.warning("Queue full, dropping %s.", "span")
        logging.getLogger("opentelemetry.exporter.otlp").error("Failed to export span batch")
    finally:
        hub_log.removeHandler(kept)
        await tracer.stop()
    sdk = [record.getMessage() for record in kept.records if record.name.startswith("opentel")]
    assert sdk == ["Queue full, dropping span.", "Failed to export span batch"]


def test_tracing_is_off_without_a_collector_and_off_when_opentelemetry_says_so() -> None:
    plain = inprocess_settings()
    named = inprocess_settings(otel_endpoint="http://collector:4318")
    assert not check_tracing(plain, {})
    assert check_tracing(plain, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert check_tracing(plain, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert check_tracing(named, {})
    assert not check_tracing(named, {"OTEL_SDK_DISABLED": "true"})
    assert not check_tracing(named, {"OTEL_TRACES_EXPORTER": "none"})
    assert isinstance(choose_tracer(plain, {}), Untraced)


def test_tracing_asked_for_without_opentelemetry_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *args: None)
    with pytest.raises(TracingUnavailable, match=r"pip install 'signage-hub\[tracing\]'"):
        check_tracing(inprocess_settings(otel_endpoint="http://collector:4318"), {})


@pytest.mark.parametrize("endpoint", ["collector:4318", "grpc://collector:4317", "ftp://x"])
def test_a_collector_that_is_not_an_http_url_is_refused(endpoint: str) -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        Settings(jwt_secret="s" * 32, otel_endpoint=endpoint)


@pytest.mark.parametrize("ratio", [-0.1, 1.5])
def test_a_sample_ratio_outside_zero_to_one_is_refused(ratio: float) -> None:
    with pytest.raises(ValueError, match="otel_sample_ratio"):
        Settings(jwt_secret="s" * 32, otel_sample_ratio=ratio)


async def test_a_published_event_reaches_subscribers_the_same_with_tracing_on(
    receiver: OtlpReceiver,
) -> None:
    """The frames of a traced hub are those of an untraced one, byte for byte."""
    frames = []
    traced: dict[str, Any] = {"otel_endpoint": receiver.url}
    for values in ({}, traced):
        async with running(history_size=0, **values) as hub:
            socket = await hub.connect(DASHBOARD)
            await socket.answer({"op": "subscribe", "room": "location:a", "ref": 1})
            trace = hub.parts.tracer.publish("socket", "acme", ["location:a"], "x.a")
            sent = await hub.publish("acme", ["location:a"], "x.a", {"k": 1}, trace=trace)
            await _event(socket)
            frames.append(socket.wire.writes[-1].replace(str(sent.ts).encode(), b"TS"))
    assert frames[0] == frames[1]
