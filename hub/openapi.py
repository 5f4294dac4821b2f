"""The REST API's OpenAPI 3.1 document, served at `/v1/openapi.json`.

Built from the same rules the handlers apply (name patterns, limits, the typed events'
models), so the document cannot drift from them; `tests/test_openapi.py` checks that every
route is in it, and a fuzzer holds every answer against it.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson

from hub import __version__
from hub.auth import SUB_RE
from hub.errors import HTTP_STATUS, ErrorCode
from hub.events import FREE_FORM_PREFIX, PUBLIC, RECEIPT_STATUSES
from hub.fleet import MAX_FLEET_LIMIT
from hub.history import ID_PATTERN
from hub.protocol import EVENT_MAX_LEN, EVENT_RE, ROOM_RE, TENANT_RE
from hub.rest import (
    DEFAULT_HISTORY_LIMIT,
    IDEMPOTENCY_KEY_RE,
    MAX_BODY_BYTES,
    MAX_BROADCAST_ROOMS,
    MAX_HISTORY_LIMIT,
    MAX_PRESENCE_LIMIT,
)

_REF = "#/components/schemas/"
JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _whole(pattern: str) -> str:
    return f"^{pattern}$"


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*codes: ErrorCode, unauthorized: bool = True) -> dict[str, Any]:
    """The error answers of an operation, each with the error body."""
    answers = {}
    if unauthorized:
        answers["401"] = _json(_ref("Error"), "no token, or one that does not verify")
    for code in codes:
        status = HTTP_STATUS[code]
        answer = _json(_ref("Error"), code.value)
        if code is ErrorCode.RATE_LIMITED:
            answer["headers"] = {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}
        answers[str(status)] = answer
    return answers


def _typed_events() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One broadcast shape per typed event, with the event's data model as a component."""
    shapes, components = [], {}
    for event, model in PUBLIC.items():
        schema = model.model_json_schema(ref_template=_REF + "{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
        shapes.append(
            {
                "properties": {"event": {"const": event}, "data": _ref(model.__name__)},
                "required": ["event", "data"],
            }
        )
    free_form = {
        "properties": {
            "event": {"type": "string", "pattern": "^" + FREE_FORM_PREFIX.replace(".", r"\.")},
            "data": {"type": "object"},
        },
        "required": ["event", "data"],
    }
    return [*shapes, free_form], components


def _schemas(events: list[dict[str, Any]]) -> dict[str, Any]:
    room = {"type": "string", "pattern": _whole(ROOM_RE.pattern), "maxLength": 128}
    return {
        "Room": room,
        "Tenant": {"type": "string", "pattern": _whole(TENANT_RE.pattern), "maxLength": 64},
        "EventId": {
            "type": "string",
            "pattern": ID_PATTERN,
            "description": "Two unsigned 64-bit integers: ms, then a sequence number",
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                }
            },
        },
        "Broadcast": {
            "type": "object",
            "description": "Exactly one of `room` and `rooms`; `tenant` for admins only",
            "properties": {
                "tenant": {"anyOf": [_ref("Tenant"), {"type": "null"}]},
                "room": _ref("Room"),
                "rooms": {
                    "type": "array",
                    "items": _ref("Room"),
                    "minItems": 1,
                    "maxItems": MAX_BROADCAST_ROOMS,
                },
                "event": {
                    "type": "string",
                    "pattern": _whole(EVENT_RE.pattern),
                    "maxLength": EVENT_MAX_LEN,
                },
                "data": {},
            },
            "required": ["event", "data"],
            "oneOf": [{"required": ["room"]}, {"required": ["rooms"]}],
            "anyOf": events,
        },
        "Published": {
            "type": "object",
            "required": ["ids", "ts"],
            "properties": {
                "ids": {
                    "type": "object",
                    "description": "Each room's new event id, null where it keeps no history",
                    "additionalProperties": {"anyOf": [_ref("EventId"), {"type": "null"}]},
                },
                "ts": {"type": "integer"},
            },
        },
        "Event": {
            "type": "object",
            "required": ["type", "room", "event", "data", "ts"],
            "properties": {
                "type": {"const": "event"},
                "room": _ref("Room"),
                "event": {"type": "string"},
                "data": {"type": "object"},
                "ts": {"type": "integer"},
                "id": _ref("EventId"),
            },
        },
        "History": {
            "type": "object",
            "required": ["room", "epoch", "events", "last"],
            "properties": {
                "room": _ref("Room"),
                "epoch": {"type": "string"},
                "events": {"type": "array", "items": _ref("Event")},
                "last": {"anyOf": [_ref("EventId"), {"type": "null"}]},
            },
        },
        "State": {
            "type": "object",
            "required": ["room", "events"],
            "properties": {
                "room": _ref("Room"),
                "events": {
                    "type": "array",
                    "items": _ref("Event"),
                    "description": "The newest event of each state name (HUB_STATE_EVENTS), "
                    "ordered by id",
                },
            },
        },
        "Receipt": {
            "type": "object",
            "required": ["sub", "role", "status", "time"],
            "properties": {
                "sub": {"type": "string"},
                "role": {"enum": ["device", "dashboard", "operator", "admin"]},
                "status": {"enum": sorted(RECEIPT_STATUSES)},
                "time": {"type": "integer", "description": "ms since the epoch"},
                "data": {"type": "object"},
            },
        },
        "Receipts": {
            "type": "object",
            "required": ["room", "id", "receipts"],
            "properties": {
                "room": _ref("Room"),
                "id": _ref("EventId"),
                "receipts": {"type": "array", "items": _ref("Receipt")},
            },
        },
        "Member": {
            "type": "object",
            "required": ["sub", "role", "node", "conn", "since", "heartbeat"],
            "properties": {
                "sub": {"type": "string"},
                "role": {"enum": ["device", "dashboard", "operator", "admin"]},
                "node": {"type": "string"},
                "conn": {"type": "string"},
                "since": {"type": "integer"},
                "heartbeat": {"anyOf": [{"type": "object"}, {"type": "null"}]},
            },
        },
        "Presence": {
            "type": "object",
            "required": ["room", "members", "next"],
            "properties": {
                "room": _ref("Room"),
                "members": {
                    "type": "array",
                    "items": _ref("Member"),
                    "maxItems": MAX_PRESENCE_LIMIT,
                },
                "next": {
                    "anyOf": [{"type": "string"}, {"type": "null"}],
                    "description": "The `after` of the next page; null on the last",
                },
            },
        },
        "Device": {
            "type": "object",
            "required": [
                "sub",
                "online",
                "loc",
                "groups",
                "node",
                "since",
                "last_seen",
                "heartbeat",
                "offline_reason",
            ],
            "properties": {
                "sub": {"type": "string"},
                "online": {"type": "boolean"},
                "loc": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "groups": {"type": "array", "items": {"type": "string"}},
                "node": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "since": {"type": "integer"},
                "last_seen": {"type": "integer"},
                "heartbeat": {"anyOf": [{"type": "object"}, {"type": "null"}]},
                "offline_reason": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            },
        },
        "Fleet": {
            "type": "object",
            "required": ["devices", "next"],
            "properties": {
                "devices": {
                    "type": "array",
                    "items": _ref("Device"),
                    "maxItems": MAX_FLEET_LIMIT,
                },
                "next": {
                    "anyOf": [{"type": "string"}, {"type": "null"}],
                    "description": "The `after` of the next page; null on the last",
                },
            },
        },
        "Stats": {
            "type": "object",
            "required": ["node", "cluster"],
            "properties": {
                "node": {
                    "type": "object",
                    "required": ["node", "connections", "rooms", "messages"],
                },
                "cluster": {
                    "anyOf": [
                        {"type": "object", "required": ["connections", "rooms", "nodes"]},
                        {"type": "null"},
                    ]
                },
                "cluster_error": {
                    "type": "string",
                    "description": "Why `cluster` is null: Redis could not be read",
                },
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "node"],
            "properties": {"status": {"const": "ok"}, "node": {"type": "string"}},
        },
        "Readiness": {
            "type": "object",
            "required": ["ready", "node"],
            "properties": {
                "ready": {"type": "boolean"},
                "reason": {"enum": ["draining", "broker unreachable", "full"]},
                "node": {"type": "string"},
            },
        },
    }


def _room_parameters(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"name": "room", "in": "path", "required": True, "schema": _ref("Room")},
        {
            "name": "tenant",
            "in": "query",
            "description": "Admins: the tenant whose room it is",
            "schema": _ref("Tenant"),
        },
        *extra,
    ]


def _name_parameter(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": "string", "pattern": _whole(SUB_RE.pattern), "maxLength": 256},
    }


def _file(summary: str, media_type: str) -> dict[str, Any]:
    """A file of the browser side: public, the same bytes for everyone."""
    return {
        "get": {
            "summary": summary,
            "security": [],
            "responses": {
                "200": {
                    "description": "the file",
                    "content": {media_type: {"schema": {"type": "string"}}},
                }
            },
        }
    }


def _limit(default: int, most: int) -> dict[str, Any]:
    return {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": most, "default": default},
    }


def _room_link(operation: str) -> dict[str, Any]:
    """Read the room a broadcast went to."""
    return {"operationId": operation, "parameters": {"room": "$request.body#/room"}}


def _paths() -> dict[str, Any]:
    reads = (ErrorCode.BAD_REQUEST, ErrorCode.FORBIDDEN, ErrorCode.RATE_LIMITED)
    unavailable = _errors(ErrorCode.UNAVAILABLE, unauthorized=False)
    return {
        "/v1/broadcast": {
            "post": {
                "operationId": "broadcast",
                "summary": "Publish one event to one or more rooms of a tenant",
                "description": f"All or nothing. A body over {MAX_BODY_BYTES} bytes is 413.",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "description": "For HUB_IDEMPOTENCY_TTL seconds, the tenant's next "
                        "requests with this key and the same body publish nothing and get "
                        "the first answer again (with `Idempotent-Replayed`); with another "
                        "body, 409. A refused request claims no key.",
                        "schema": {
                            "type": "string",
                            "pattern": _whole(IDEMPOTENCY_KEY_RE.pattern),
                            "maxLength": 128,
                        },
                    },
                    {
                        "name": "traceparent",
                        "in": "header",
                        "description": "W3C trace context: while the node traces, the "
                        "broadcast's spans join this trace. A malformed one is ignored.",
                        "schema": {"type": "string"},
                    },
                ],
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("Broadcast")}}},
                "responses": {
                    "202": {
                        **_json(_ref("Published"), "published to every room"),
                        "headers": {
                            "Idempotent-Replayed": {
                                "description": "The first answer for this Idempotency-Key "
                                "again: nothing was published now",
                                "schema": {"const": "true"},
                            }
                        },
                        "links": {
                            "history": _room_link("roomHistory"),
                            "state": _room_link("roomState"),
                            "presence": _room_link("roomPresence"),
                        },
                    },
                    **_errors(
                        ErrorCode.BAD_REQUEST,
                        ErrorCode.FORBIDDEN,
                        ErrorCode.NOT_FOUND,
                        ErrorCode.CONFLICT,
                        ErrorCode.TOO_LARGE,
                        ErrorCode.RATE_LIMITED,
                    ),
                    **unavailable,
                },
            }
        },
        "/v1/rooms/{room}/history": {
            "get": {
                "operationId": "roomHistory",
                "summary": "A room's retained events after `since`, oldest first",
                "parameters": _room_parameters(
                    {"name": "since", "in": "query", "schema": _ref("EventId")},
                    _limit(DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT),
                ),
                "responses": {
                    "200": _json(_ref("History"), "the page"),
                    **_errors(*reads),
                    **unavailable,
                },
            }
        },
        "/v1/rooms/{room}/state": {
            "get": {
                "operationId": "roomState",
                "summary": "A room's current state: the newest event of each state name",
                "parameters": _room_parameters(),
                "responses": {
                    "200": _json(_ref("State"), "the state"),
                    **_errors(*reads),
                    **unavailable,
                },
            }
        },
        "/v1/rooms/{room}/events/{id}/receipts": {
            "get": {
                "operationId": "eventReceipts",
                "summary": "The latest receipt of each principal for one event, oldest first",
                "parameters": _room_parameters(
                    {"name": "id", "in": "path", "required": True, "schema": _ref("EventId")}
                ),
                "responses": {
                    "200": _json(_ref("Receipts"), "the receipts"),
                    **_errors(*reads),
                    **unavailable,
                },
            }
        },
        "/v1/rooms/{room}/presence": {
            "get": {
                "operationId": "roomPresence",
                "summary": "A page of a room's members, in (sub, conn) order",
                "parameters": _room_parameters(
                    {
                        "name": "after",
                        "in": "query",
                        "description": "The `next` of the previous page",
                        "schema": {"type": "string", "pattern": " ", "maxLength": 600},
                    },
                    _limit(MAX_PRESENCE_LIMIT, MAX_PRESENCE_LIMIT),
                ),
                "responses": {
                    "200": _json(_ref("Presence"), "the page"),
                    **_errors(*reads),
                    **unavailable,
                },
            }
        },
        "/v1/devices": {
            "get": {
                "operationId": "fleet",
                "summary": "A page of the tenant's devices, online or not, in sub order",
                "description": "A page may hold fewer than `limit` devices and still have a "
                "`next` when filters skip many: follow `next` until it is null.",
                "parameters": [
                    {
                        "name": "tenant",
                        "in": "query",
                        "description": "Admins: the tenant whose fleet it is",
                        "schema": _ref("Tenant"),
                    },
                    _name_parameter("loc", "Only devices of this location"),
                    _name_parameter("group", "Only devices in this group"),
                    {"name": "online", "in": "query", "schema": {"enum": ["true", "false"]}},
                    _name_parameter("after", "The `next` of the previous page"),
                    _limit(MAX_FLEET_LIMIT, MAX_FLEET_LIMIT),
                ],
                "responses": {
                    "200": _json(_ref("Fleet"), "the page"),
                    **_errors(*reads),
                    **unavailable,
                },
            }
        },
        "/v1/stats": {
            "get": {
                "summary": "This node's and the cluster's figures (an operator's tenant only)",
                "security": [{"bearer": []}, {"statsKey": []}],
                "responses": {
                    "200": _json(_ref("Stats"), "the figures"),
                    **_errors(ErrorCode.FORBIDDEN, ErrorCode.RATE_LIMITED),
                    **unavailable,
                },
            }
        },
        "/v1/ws": {
            "get": {
                "summary": "Without an upgrade: what a WebSocket handshake with this token "
                "would answer (for browsers, which cannot read a refused handshake)",
                "security": [{"bearer": []}, {"queryToken": []}],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["accepted", "node"],
                            "properties": {
                                "accepted": {"const": True},
                                "node": {"type": "string"},
                            },
                        },
                        "a handshake with this token would be accepted now",
                    ),
                    **_errors(ErrorCode.FORBIDDEN, ErrorCode.RATE_LIMITED),
                    **unavailable,
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Whether the process lives",
                "security": [],
                "responses": {"200": _json(_ref("Health"), "alive")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Whether the node takes new sockets",
                "security": [],
                "responses": {
                    "200": _json(_ref("Readiness"), "ready"),
                    "503": _json(_ref("Readiness"), "not ready, and why"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (the stats key when HUB_STATS_KEY is set)",
                "security": [{}, {"statsKey": []}],
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": _json(_ref("Error"), "the stats key is required"),
                },
            }
        },
        "/client.js": _file(
            "The browser client, an ES module (docs/protocol.md)", "text/javascript"
        ),
        "/client.d.ts": _file(
            "The browser client's TypeScript declarations", "application/typescript"
        ),
        "/console": _file(
            "The operators' console (its token goes in the URL fragment)", "text/html"
        ),
        "/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "the OpenAPI document")},
            }
        },
    }


def document() -> dict[str, Any]:
    events, components = _typed_events()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hub",
            "version": __version__,
            "description": "REST API of the hub; sockets connect at `/v1/ws` (docs/protocol.md).",
        },
        "paths": _paths(),
        "components": {
            "schemas": {**_schemas(events), **components},
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
