"""The REST API's OpenAPI document: valid, complete, generated from the code's types,
served, and held against a real node by schemathesis (every route, generated valid and
broken requests, no 5xx, every answer as the document says)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, get_type_hints

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis import Case
from starlette.routing import Route
from typing_extensions import is_typeddict

from hub import bodies
from hub.app import create_app
from hub.auth import SUB_RE
from hub.config import Settings
from hub.events import PUBLIC
from hub.openapi import document, encoded
from hub.protocol import ROOM_RE, TENANT_RE
from tests.support import SECRET, HubNode, RedisServer, token

EXAMPLES = 20
"""Per operation and role, so 60 per operation: enough to reach every branch the document
describes (the examples are derandomized, the same each run)."""
SCENARIOS = 20
"""Sequences of broadcasts and reads: each a few steps long."""
TOKENS = {
    "operator": token("operator", "o"),
    "admin": token("admin", "root"),
    "dashboard": token("dashboard", "d", rooms=["location:*"]),
}


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(document())
    assert document()["openapi"] == "3.1.0"


def test_every_route_is_in_the_document_and_nothing_else() -> None:
    app: Any = create_app(Settings(jwt_secret=SECRET))
    routes = {
        (route.path, method.lower())
        for route in app._http.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    documented = {(path, method) for path, item in document()["paths"].items() for method in item}
    assert routes == documented


def test_a_field_added_to_a_body_type_is_in_the_document(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each schema is pydantic's of a type the handlers build, not a copy written beside it."""

    class Health(bodies.Health):
        uptime: float

    monkeypatch.setattr(bodies, "Health", Health)
    schema = document()["components"]["schemas"]["Health"]
    assert schema["properties"]["uptime"] == {"type": "number"}
    assert schema["required"] == list(get_type_hints(Health))


def test_every_body_type_is_a_schema_of_the_document() -> None:
    """Each shape of `hub.bodies` is named by an operation (or by another shape): none is
    left behind when an operation stops using it."""
    shapes = {
        name
        for name, value in vars(bodies).items()
        if is_typeddict(value) and value.__module__ == bodies.__name__
    }
    assert shapes <= document()["components"]["schemas"].keys()


def test_a_broadcast_of_each_typed_event_carries_that_events_model() -> None:
    broadcast = document()["components"]["schemas"]["Broadcast"]
    shapes = {
        shape["properties"]["event"].get("const"): shape["properties"]["data"]
        for shape in broadcast["anyOf"]
    }
    for event, model in PUBLIC.items():
        assert shapes[event] == {"$ref": f"#/components/schemas/{model.__name__}"}


@pytest.mark.parametrize(
    ("pattern", "longest"),
    [
        (ROOM_RE, bodies.ROOM_MAX_LEN),
        (TENANT_RE, bodies.TENANT_MAX_LEN),
        (SUB_RE, bodies.SUB_MAX_LEN),
    ],
)
def test_each_documented_length_is_the_longest_its_pattern_takes(
    pattern: re.Pattern[str], longest: int
) -> None:
    assert pattern.fullmatch("a" * longest) is not None
    assert pattern.fullmatch("a" * (longest + 1)) is None


def test_the_node_serves_the_document(single: HubNode) -> None:
    answer = httpx.get(f"{single.url}/v1/openapi.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.content == encoded()
    assert orjson.loads(answer.content)["paths"].keys() == document()["paths"].keys()


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubNode]:
    """One node, with a Redis of its own, for all the generated requests (a node's start
    would be half of each operation's time): every request rate off, so that no test's
    answers depend on the requests of those before it, and history in a room."""
    redis = RedisServer()
    node = HubNode(
        "fuzzed",
        redis.url,
        log_dir=tmp_path_factory.mktemp("fuzzed"),
        broadcast_rate=0,
        read_rate=0,
    )
    try:
        redis.start()
        node.start()
        answer = node.broadcast(TOKENS["operator"], room="location:lobby", event="x.n", data={})
        assert answer.status_code == 202
        yield node
    finally:
        node.stop()
        redis.stop()


schema = schemathesis.openapi.from_dict(document()).exclude(path="/v1/stream", method="GET")
"""The document the node serves (the test above checks they are the same bytes), but for
opening an event stream: accepted, it never ends (tests/test_stream.py opens them)."""
RELATIVE_BOUNDS = (
    b"ttl must be at most the history TTL",
    b"apply_at must be at most 24 h ahead",
    b"webhook host ",
    b"the webhook url",
)
"""Refusals of a body for what the document cannot state: the room's history TTL is a
setting, "a day ahead" moves with the hub's clock, and whether a webhook's host is a name
that resolves, to public addresses only, is the network's answer (a URL's pattern in the
document says only its scheme)."""


def filter_failure(_context: Any, _failure: Any, _case: Case[Any], response: Any) -> bool:
    """Keep every failure but a body refused for one of `RELATIVE_BOUNDS`, with a 400."""
    return response.status_code != 400 or not any(
        bound in response.content for bound in RELATIVE_BOUNDS
    )


schema.hook(filter_failure)
FUZZING = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
CREDENTIALS = "credentials"
"""What a generated request carries in place of a token until the test puts in the token
of the role it runs for: schemathesis makes its auth providers itself, knowing no role."""


def _bearer(token: str) -> type:
    """Sends `token`, except where a case is generated without credentials."""

    class Bearer:
        def get(self, case: Case[Any], context: Any) -> str:
            return token

        def set(self, case: Case[Any], data: str, context: Any) -> None:
            case.headers["Authorization"] = f"Bearer {data}"

    return Bearer


@pytest.mark.parametrize("role", sorted(TOKENS))
@schema.auth.apply(_bearer(CREDENTIALS))
@schema.parametrize()
@FUZZING
def test_every_route_answers_as_documented(case: Case[Any], role: str, fuzzed: HubNode) -> None:
    """Generated requests, valid and broken, with the role's credentials or none. The role
    is a pytest parameter so that each operation and role has a node id of its own: under
    pytest 9.2, schemathesis gives the operations of one test a single id, and xdist, which
    shares tests out by id, ran only one of them."""
    if case.headers.get("Authorization") == f"Bearer {CREDENTIALS}":
        case.headers["Authorization"] = f"Bearer {TOKENS[role]}"
    case.call_and_validate(base_url=fuzzed.url)


def test_broadcasts_then_reads_answer_as_documented(fuzzed: HubNode) -> None:
    """Sequences that follow the document's links: a broadcast, then the history and the
    presence of the room it went to."""
    stateful = schemathesis.openapi.from_dict(document()).exclude(path="/v1/stream", method="GET")
    stateful.auth(_bearer(TOKENS["operator"]))
    stateful.hook(filter_failure)

    class Workflow(stateful.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Case[Any]) -> dict[str, Any]:
            return {"base_url": fuzzed.url}

    Workflow.run(
        settings=settings(
            max_examples=SCENARIOS,
            stateful_step_count=4,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
    )
