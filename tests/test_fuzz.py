"""Generated client frames, valid and broken, against a real node: every frame is
answered, the socket stays open, and nothing is left behind once the socket closes (rooms,
sockets, event-loop tasks, memory)."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websocket import WebSocket, create_connection

from tests.conftest import NodeFactory
from tests.support import HubNode, token, wait_until

EXAMPLES = 300
ANSWER_TIMEOUT = 10.0
"""A frame left unanswered this long fails the test rather than hanging it."""
MEMORY_BOUND = 8 * 2**20
"""What the node may keep after the fuzzer has gone: the few small events kept in
history (a run keeps well under 1 MiB); far less than the frames sent (up to 64 KiB each)."""
OPS = [
    "subscribe",
    "unsubscribe",
    "publish",
    "heartbeat",
    "ping",
    "refresh",
    "receipt",
    "dance",
    "",
]
names = st.one_of(
    st.sampled_from(["status", "devices", "location:lobby", "device:p1", "x:y@z", "r"]),
    st.text(max_size=140),
)
ids = st.one_of(
    st.sampled_from(["0-0", "1-0", "18446744073709551615-0", "18446744073709551616-0", "1-0\n"]),
    st.from_regex(r"[0-9]{1,22}-[0-9]{1,22}", fullmatch=True),
    st.text(max_size=30),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
fields = st.fixed_dictionaries(
    {"op": st.sampled_from(OPS)},
    optional={
        "room": names,
        "event": st.one_of(st.sampled_from(["x.a", "command", "alert", "device.online"]), names),
        "data": json_values,
        "since": ids,
        "epoch": st.one_of(st.text(max_size=20), st.integers()),
        "tenant": st.one_of(st.sampled_from(["acme", "globex", "a:b"]), names),
        "ref": st.one_of(st.integers(), st.text(max_size=10), st.booleans(), st.none()),
        "token": st.one_of(st.text(max_size=40), st.integers(), st.just("a.b.c")),
    },
)
frames = st.one_of(
    fields.map(json.dumps),  # stdlib: integers of any size, which clients do send
    st.text(max_size=200),
    st.sampled_from(["{", "[]", "null", '{"op":"ping","ref":' + "[" * 300 + "]" * 300 + "}"]),
    st.just('{"op":"publish","room":"r","event":"x.a","data":' + '{"a":' * 300 + "1" + "}" * 301),
)


def _answers_until(ws: WebSocket, ref: str) -> list[dict[str, Any]]:
    """Every frame that is not an event, up to the pong for `ref`, and the answer that
    comes after it when none came before: a publish is answered once it is published,
    and the socket reads on meanwhile, so the pong may overtake its ack."""
    seen: list[dict[str, Any]] = []
    pong = False
    while not pong or not seen:
        frame = orjson.loads(ws.recv())
        if frame.get("type") == "pong" and frame.get("ref") == ref:
            pong = True
        elif frame.get("type") != "event":
            seen.append(frame)
    return seen


def _gauge(node: HubNode, name: str) -> float:
    for line in node.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


def _node_figures(node: HubNode) -> dict[str, Any]:
    stats = node.get("/v1/stats", token("admin", "root", tenant=None)).json()
    figures: dict[str, Any] = stats["node"]
    return figures


def test_generated_frames_are_each_answered_and_leave_nothing_behind(
    hub_node: NodeFactory,
) -> None:
    node = hub_node("fuzzed", client_rate=0, max_frame_bytes=65536)
    baseline = _node_figures(node)["rooms"]
    wait_until(lambda: _gauge(node, "hub_tasks") > 0, 10, "the first sample of the tasks")
    tasks, memory = _gauge(node, "hub_tasks"), _gauge(node, "process_resident_memory_bytes")
    bearer = token("dashboard", "fuzzer", publish=["*"])
    ws = create_connection(
        node.ws_url, header=[f"Authorization: Bearer {bearer}"], timeout=ANSWER_TIMEOUT
    )
    assert orjson.loads(ws.recv())["type"] == "welcome"
    sent = 0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(frame=frames)
    def each_frame(frame: str) -> None:
        nonlocal sent
        sent += 1
        ws.send(frame)
        sentinel = f"sentinel-{sent}"
        ws.send(orjson.dumps({"op": "ping", "ref": sentinel}).decode())
        answers = _answers_until(ws, sentinel)
        assert len(answers) == 1, (frame, answers)
        answer = answers[0]
        assert answer["type"] in ("ack", "error", "pong"), answer
        if answer["type"] == "error":
            assert answer["code"] in (
                "bad_request",
                "forbidden",
                "not_found",
                "too_large",
                "unavailable",
            )
            assert "redis" not in answer["message"].lower()

    each_frame()
    ws.close()

    def back_to_baseline() -> bool:
        figures = _node_figures(node)
        return bool(figures["rooms"] == baseline and figures["connections"]["total"] == 0)

    wait_until(back_to_baseline, 10, "the node to hold no room or socket of the fuzzer")
    wait_until(lambda: _gauge(node, "hub_tasks") == tasks, 10, "the fuzzer's tasks to end")
    grown = _gauge(node, "process_resident_memory_bytes") - memory
    assert grown < MEMORY_BOUND, f"the node kept {grown / 2**20:.1f} MiB after {sent} frames"
    assert "Traceback" not in node.output()
