"""The REST API's OpenAPI document: valid, complete, served, and held against a real node
by schemathesis (every route, generated valid and broken requests, no 5xx, every answer
as the document says)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis import Case
from starlette.routing import Route

from hub.app import create_app
from hub.config import Settings
from hub.openapi import document, encoded
from tests.conftest import NodeFactory
from tests.support import SECRET, HubNode, RedisServer, token

EXAMPLES = 60
SCENARIOS = 40
"""Per operation and token: enough to reach every branch the document describes, in
well under a minute for all of them."""
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


def test_the_node_serves_the_document(single: HubNode) -> None:
    answer = httpx.get(f"{single.url}/v1/openapi.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.content == encoded()
    assert orjson.loads(answer.content)["paths"].keys() == document()["paths"].keys()


@pytest.fixture
def fuzzed(hub_node: NodeFactory, redis_server: RedisServer) -> HubNode:
    """A node with Redis and every request rate off, a device present, history in a room."""
    node = hub_node("fuzzed", redis_server.url, broadcast_rate=0)
    answer = node.broadcast(TOKENS["operator"], room="location:lobby", event="x.n", data={})
    assert answer.status_code == 202
    return node


schema = schemathesis.openapi.from_dict(document())
"""The document the node serves (the test above checks they are the same bytes)."""
FUZZING = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


def _bearer(role: str) -> type:
    """Sends `role`'s token, except where a case is generated without credentials."""

    class Bearer:
        def get(self, case: Case[Any], context: Any) -> str:
            return TOKENS[role]

        def set(self, case: Case[Any], data: str, context: Any) -> None:
            case.headers["Authorization"] = f"Bearer {data}"

    return Bearer


def _answers_as_documented(role: str) -> Any:
    @schema.auth.apply(_bearer(role))
    @schema.parametrize()
    @FUZZING
    def test(case: Case[Any], fuzzed: HubNode) -> None:
        case.call_and_validate(base_url=fuzzed.url)

    test.__doc__ = f"Generated requests, valid and broken, with {role} credentials or none."
    return test


test_every_route_answers_an_operator_as_documented = _answers_as_documented("operator")
test_every_route_answers_an_admin_as_documented = _answers_as_documented("admin")
test_every_route_answers_a_dashboard_as_documented = _answers_as_documented("dashboard")


def test_broadcasts_then_reads_answer_as_documented(fuzzed: HubNode) -> None:
    """Sequences that follow the document's links: a broadcast, then the history and the
    presence of the room it went to."""
    stateful = schemathesis.openapi.from_dict(document())
    stateful.auth(_bearer("operator"))

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
