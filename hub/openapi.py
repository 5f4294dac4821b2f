"""The REST API's OpenAPI 3.1 document, served at `/v1/openapi.json`.

Here are only the operations (paths, parameters, answers) as plain data that holds a type
wherever a schema goes: a type of `hub.bodies` or a typed event's model. `_schemas` swaps
each for pydantic's JSON Schema of it, asked for in one go, so a field added to a type is in
the document and the limits are the parsers' own. `tests/test_openapi.py` checks that every
route is in it, and a fuzzer holds every answer against it.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import orjson
from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode

from hub import __version__, bodies
from hub.errors import HTTP_STATUS, ErrorCode
from hub.events import PUBLIC
from hub.http import STREAM_PATH

REF = "#/components/schemas/{model}"
JSON = "application/json"
READS = (ErrorCode.BAD_REQUEST, ErrorCode.FORBIDDEN, ErrorCode.RATE_LIMITED)
"""What any read of the REST API may be refused with, besides 401 and 503."""

Json = dict[str, Any]
VALIDATION: JsonSchemaMode = "validation"
"""Each schema says what a value must be to be read as its type: an answer, too, is a value
its client reads."""


class _Untitled(GenerateJsonSchema):
    """Without a title on each property, which would only repeat its name."""

    def field_title_should_be_set(self, _schema: Any) -> bool:
        return False


def _json(shape: Any, description: str) -> Json:
    return {"description": description, "content": {JSON: {"schema": shape}}}


def _errors(*codes: ErrorCode, unauthorized: bool = True) -> Json:
    """The refusals of an operation, each with the error body."""
    answers = {}
    if unauthorized:
        answers["401"] = _json(bodies.Error, "no token, or one that does not verify")
    for code in codes:
        answer = _json(bodies.Error, code.value)
        if code is ErrorCode.RATE_LIMITED:
            answer["headers"] = {"Retry-After": {"schema": bodies.RetryAfter}}
        answers[str(HTTP_STATUS[code])] = answer
    return answers


def _unavailable() -> Json:
    """503: the broker cannot be reached, so the request is refused, never half done."""
    return _errors(ErrorCode.UNAVAILABLE, unauthorized=False)


def _query(name: str, shape: Any, description: str | None = None) -> Json:
    parameter = {"name": name, "in": "query", "schema": shape}
    return parameter if description is None else {**parameter, "description": description}


def _path(name: str, shape: Any) -> Json:
    return {"name": name, "in": "path", "required": True, "schema": shape}


def _room(*extra: Json) -> list[Json]:
    """The parameters of a read of one room."""
    return [
        {"name": "room", "in": "path", "required": True, "schema": bodies.Room},
        _query("tenant", bodies.Tenant, "Admins: the tenant whose room it is"),
        *extra,
    ]


def _read(
    operation: str,
    summary: str,
    parameters: list[Json],
    shape: Any,
    what: str,
    description: str | None = None,
    refusals: tuple[ErrorCode, ...] = READS,
) -> Json:
    """A GET of the API's data, and the refusals every such read may get."""
    read = {"operationId": operation, "summary": summary, "parameters": parameters}
    if description is not None:
        read["description"] = description
    responses = {"200": _json(shape, what), **_errors(*refusals), **_unavailable()}
    return {"get": {**read, "responses": responses}}


def _room_link(operation: str) -> Json:
    """Read the room a broadcast went to."""
    return {"operationId": operation, "parameters": {"room": "$request.body#/room"}}


def _broadcast() -> Json:
    idempotency = (
        "For HUB_IDEMPOTENCY_TTL seconds, the tenant's next requests with this key and the "
        "same body publish nothing and get the first answer again (with "
        "`Idempotent-Replayed`); with another body, 409. A refused request claims no key."
    )
    trace = (
        "W3C trace context: while the node traces, the broadcast's spans join this trace. "
        "A malformed one is ignored."
    )
    replayed = "The first answer for this Idempotency-Key again: nothing was published now"
    accepted = {
        **_json(bodies.Published, "published to every room"),
        "headers": {"Idempotent-Replayed": {"description": replayed, "schema": Literal["true"]}},
        "links": {
            "history": _room_link("roomHistory"),
            "state": _room_link("roomState"),
            "presence": _room_link("roomPresence"),
        },
    }
    refusals = (
        ErrorCode.BAD_REQUEST,
        ErrorCode.FORBIDDEN,
        ErrorCode.NOT_FOUND,
        ErrorCode.CONFLICT,
        ErrorCode.TOO_LARGE,
        ErrorCode.RATE_LIMITED,
    )
    return {
        "post": {
            "operationId": "broadcast",
            "summary": "Publish one event to one or more rooms of a tenant",
            "description": f"All or nothing. A body over {bodies.MAX_BODY_BYTES} bytes is 413.",
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "description": idempotency,
                    "schema": bodies.IdempotencyKey,
                },
                {"name": "traceparent", "in": "header", "description": trace, "schema": str},
            ],
            "requestBody": {"required": True, "content": {JSON: {"schema": bodies.Broadcast}}},
            "responses": {
                "202": accepted,
                **_errors(*refusals),
                **_unavailable(),
            },
        }
    }


def _webhooks() -> Json:
    """A tenant's webhook endpoints and their delivery logs (operators; admins name one)."""
    tenant = _query("tenant", bodies.Tenant, "Admins: the tenant whose webhooks they are")
    endpoint, message = _path("id", bodies.WebhookId), _path("message", bodies.WebhookId)
    unknown = (*READS, ErrorCode.NOT_FOUND)
    registered = {
        "201": _json(bodies.WebhookCreated, "registered; its secret is never shown again"),
        **_errors(*READS, ErrorCode.CONFLICT, ErrorCode.TOO_LARGE),
        **_unavailable(),
    }
    return {
        "/v1/webhooks": {
            **_read(
                "webhooks", "The tenant's webhook endpoints", [tenant], bodies.Webhooks, "them"
            ),
            "post": {
                "operationId": "registerWebhook",
                "summary": "Register an endpoint the tenant's status events are sent to",
                "description": "Signed as Standard Webhooks with the secret answered; at "
                "most HUB_WEBHOOK_MAX_ENDPOINTS per tenant (409 past it).",
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": bodies.WebhookRegistration}},
                },
                "responses": registered,
            },
        },
        "/v1/webhooks/{id}": {
            "delete": {
                "operationId": "removeWebhook",
                "summary": "Remove an endpoint, and what is pending for it",
                "parameters": [endpoint, tenant],
                "responses": {
                    "204": {"description": "removed"},
                    **_errors(*unknown),
                    **_unavailable(),
                },
            }
        },
        "/v1/webhooks/{id}/deliveries": _read(
            "webhookDeliveries",
            "An endpoint's recent messages and their state, newest first",
            [endpoint, tenant, _query("limit", bodies.WebhookDeliveriesLimit)],
            bodies.WebhookDeliveries,
            "the log",
            refusals=unknown,
        ),
        "/v1/webhooks/{id}/deliveries/{message}/retry": {
            "post": {
                "operationId": "retryWebhookMessage",
                "summary": "Send one message again now, whatever its state",
                "parameters": [endpoint, message, tenant],
                "responses": {
                    "202": _json(bodies.WebhookRetried, "pending again"),
                    **_errors(*unknown),
                    **_unavailable(),
                },
            }
        },
    }


def _reads() -> Json:
    """The reads of a tenant's rooms and fleet."""
    fleet = "Admins: the tenant whose fleet it is"
    return {
        "/v1/rooms/{room}/history": _read(
            "roomHistory",
            "A room's retained events after `since`, oldest first",
            _room(_query("since", bodies.EventId), _query("limit", bodies.HistoryLimit)),
            bodies.History,
            "the page",
        ),
        "/v1/rooms/{room}/state": _read(
            "roomState",
            "A room's current state: the newest event of each state name",
            _room(),
            bodies.State,
            "the state",
        ),
        "/v1/rooms/{room}/events/{id}/receipts": _read(
            "eventReceipts",
            "The latest receipt of each principal for one event, oldest first",
            _room({"name": "id", "in": "path", "required": True, "schema": bodies.EventId}),
            bodies.Receipts,
            "the receipts",
        ),
        "/v1/rooms/{room}/presence": _read(
            "roomPresence",
            "A page of a room's members, in (sub, conn) order",
            _room(
                _query("after", bodies.PresenceCursor, "The `next` of the previous page"),
                _query("limit", bodies.PresenceLimit),
            ),
            bodies.Presence,
            "the page",
        ),
        "/v1/devices": _read(
            "fleet",
            "A page of the tenant's devices, online or not, in sub order",
            [
                _query("tenant", bodies.Tenant, fleet),
                _query("loc", bodies.Name, "Only devices of this location"),
                _query("group", bodies.Name, "Only devices in this group"),
                _query("online", bodies.Online),
                _query("after", bodies.Name, "The `next` of the previous page"),
                _query("limit", bodies.FleetLimit),
            ],
            bodies.Fleet,
            "the page",
            description="A page may hold fewer than `limit` devices and still have a `next` "
            "when filters skip many: follow `next` until it is null.",
        ),
    }


def _node() -> Json:
    """What a node says of itself."""
    stats = "This node's and the cluster's figures (an operator's tenant only)"
    handshake = (
        "Without an upgrade: what a WebSocket handshake with this token would answer "
        "(for browsers, which cannot read a refused handshake)"
    )
    known = (ErrorCode.FORBIDDEN, ErrorCode.RATE_LIMITED)
    return {
        "/v1/stats": _get(
            stats,
            {"200": _json(bodies.Stats, "the figures"), **_errors(*known), **_unavailable()},
            security=[{"bearer": []}, {"statsKey": []}],
        ),
        "/v1/ws": _get(
            handshake,
            {
                "200": _json(bodies.Handshake, "a handshake with this token would be accepted now"),
                **_errors(*known),
                **_unavailable(),
            },
            security=[{"bearer": []}, {"queryToken": []}],
        ),
        "/healthz": _get("Whether the process lives", {"200": _json(bodies.Health, "alive")}),
        "/readyz": _get(
            "Whether the node takes new sockets",
            {
                "200": _json(bodies.Readiness, "ready"),
                "503": _json(bodies.Readiness, "not ready, and why"),
            },
        ),
        "/metrics": _get(
            "Prometheus metrics (the stats key when HUB_STATS_KEY is set)",
            {
                "200": _text("Prometheus text format", "text/plain"),
                "401": _json(bodies.Error, "the stats key is required"),
            },
            security=[{}, {"statsKey": []}],
        ),
    }


def _stream() -> Json:
    """The event stream: the same session as a socket's, for screens behind proxies that
    refuse upgrades (docs/protocol.md)."""
    opened = "Server-Sent Events: each message's `data` is a server frame, the welcome first"
    post = (
        "Any node takes it and hands it to the node that holds the session. The frames' "
        "answers come on the stream, in order."
    )
    refused = (ErrorCode.BAD_REQUEST, ErrorCode.FORBIDDEN, ErrorCode.NOT_FOUND)
    return {
        STREAM_PATH: _get(
            "Open an event stream: refused as a WebSocket handshake is",
            {
                "200": _text(opened, "text/event-stream"),
                **_errors(ErrorCode.FORBIDDEN, ErrorCode.RATE_LIMITED),
                **_unavailable(),
            },
            security=[{"bearer": []}, {"queryToken": []}],
        ),
        STREAM_PATH + "/{session}": {
            "post": {
                "operationId": "streamFrames",
                "summary": "Send client frames to an event stream's session",
                "description": post,
                "security": [{"bearer": []}, {"queryToken": []}],
                "parameters": [
                    {
                        "name": "session",
                        "in": "path",
                        "required": True,
                        "schema": bodies.StreamSession,
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": bodies.ClientFrames}},
                },
                "responses": {
                    "202": {"description": "taken: their answers come on the stream"},
                    **_errors(*refused, ErrorCode.TOO_LARGE, ErrorCode.RATE_LIMITED),
                    **_unavailable(),
                },
            }
        },
    }


def _files() -> Json:
    """Public files: the same bytes for everyone."""
    return {
        "/client.js": _get(
            "The browser client, an ES module (docs/protocol.md)",
            {"200": _text("the file", "text/javascript")},
        ),
        "/client.d.ts": _get(
            "The browser client's TypeScript declarations",
            {"200": _text("the file", "application/typescript")},
        ),
        "/client.legacy.js": _get(
            "The browser client as a classic script defining `window.Hub`, for older screens",
            {"200": _text("the file", "text/javascript")},
        ),
        "/client.legacy.d.ts": _get(
            "The declarations of the classic script's `window.Hub`",
            {"200": _text("the file", "application/typescript")},
        ),
        "/console": _get(
            "The operators' console (its token goes in the URL fragment)",
            {"200": _text("the file", "text/html")},
        ),
        "/v1/openapi.json": _get(
            "This document", {"200": _json(dict[str, Any], "the OpenAPI document")}
        ),
    }


def _get(summary: str, responses: Json, security: list[Json] | None = None) -> Json:
    """A GET that takes no parameters: public unless `security` says who may call it."""
    return {"get": {"summary": summary, "security": security or [], "responses": responses}}


def _text(description: str, media_type: str) -> Json:
    """An answer that is not JSON."""
    return {"description": description, "content": {media_type: {"schema": str}}}


def _events() -> list[Json]:
    """What `data` a broadcast carries, by its `event`: a typed event's model, or any
    object for a free-form name."""
    typed = [
        {"properties": {"event": {"const": event}, "data": model}, "required": ["event", "data"]}
        for event, model in PUBLIC.items()
    ]
    free_form = {
        "properties": {"event": bodies.FreeFormName, "data": dict[str, Any]},
        "required": ["event", "data"],
    }
    return [*typed, free_form]


def _placed(node: Any, wanted: list[tuple[Any, Json]]) -> None:
    """Swap every type in `node` (where the document wants that type's schema) for an empty
    dict, noted in `wanted` with the type, to be filled with the schema."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in list(items):
        if isinstance(value, dict | list):
            _placed(value, wanted)
        elif not isinstance(value, str | int | float | bool | None):
            slot: Json = {}
            node[key] = slot
            wanted.append((value, slot))


def _schemas(*parts: Any) -> Json:
    """Fill the schemas that `parts` want, asking pydantic for them all at once so that
    each named type is one component, which every place that names it refers to."""
    wanted: list[tuple[Any, Json]] = []
    for part in parts:
        _placed(part, wanted)
    shapes = {id(shape): shape for shape, _ in wanted}
    adapters = [(key, VALIDATION, TypeAdapter(shape)) for key, shape in shapes.items()]
    schemas, top = TypeAdapter.json_schemas(adapters, ref_template=REF, schema_generator=_Untitled)
    for shape, slot in wanted:
        slot.update(schemas[id(shape), VALIDATION])
    components: Json = top.get("$defs", {})
    return components


def document() -> Json:
    """The typed events join the broadcast body's schema last: which model goes with which
    event name is a mapping (`hub.events.PUBLIC`), not a type."""
    paths = {
        "/v1/broadcast": _broadcast(),
        **_reads(),
        **_webhooks(),
        **_node(),
        **_stream(),
        **_files(),
    }
    events = _events()
    components = _schemas(paths, events)
    components["Broadcast"]["anyOf"] = events
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hub",
            "version": __version__,
            "description": "REST API of the hub; sockets connect at `/v1/ws` (docs/protocol.md).",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "statsKey": {"type": "http", "scheme": "bearer"},
                "queryToken": {"type": "apiKey", "in": "query", "name": "token"},
            },
        },
        "security": [{"bearer": []}],
    }


@functools.cache
def encoded() -> bytes:
    """The document's bytes, made at the first request for them: made at import, they
    were a sixth of the time a node takes to start."""
    return orjson.dumps(document())
