"""The wire contract: names, close codes, error codes, client frames in, server frames out.

Pure: no sockets, no event loop. Client frames are parsed and checked here so that a
connection only ever sees a well-formed `Request`; server frames are built here as bytes.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

import orjson

PROTOCOL_VERSION = 1

ROOM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
EVENT_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
EVENT_MAX_LEN = 64
ID_RE = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")


class Close(IntEnum):
    NORMAL = 1000
    UNSUPPORTED_DATA = 1003
    POLICY = 1008
    TOO_BIG = 1009
    INTERNAL = 1011
    RESTART = 1012
    TRY_AGAIN = 1013
    HEARTBEAT_TIMEOUT = 4008
    SLOW_CONSUMER = 4009
    RATE_LIMITED = 4029


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    TOO_LARGE = "too_large"
    UNAVAILABLE = "unavailable"


class Op(StrEnum):
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    PUBLISH = "publish"
    HEARTBEAT = "heartbeat"
    PING = "ping"


Ref = int | str | None


class HubError(Exception):
    """A refusal the client is told about in an `error` frame (or a REST error body)."""

    def __init__(
        self, code: ErrorCode, message: str, ref: Ref = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Request:
    """One well-formed client frame."""

    op: Op
    ref: Ref
    room: str | None = None
    event: str | None = None
    data: Any = None
    since: str | None = None
    epoch: str | None = None
    tenant: str | None = None


def check_room(room: Any, ref: Ref = None) -> str:
    if not isinstance(room, str) or not ROOM_RE.match(room):
        raise HubError(
            ErrorCode.BAD_REQUEST,
            "room must match ^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$",
            ref,
        )
    return room


def check_tenant(tenant: Any, ref: Ref = None) -> str:
    if not isinstance(tenant, str) or not TENANT_RE.match(tenant):
        raise HubError(
            ErrorCode.BAD_REQUEST, "tenant must match ^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$", ref
        )
    return tenant


def check_event_name(event: Any, ref: Ref = None) -> str:
    if not isinstance(event, str) or len(event) > EVENT_MAX_LEN or not EVENT_RE.match(event):
        raise HubError(
            ErrorCode.BAD_REQUEST,
            "event must match ^[a-z][a-z0-9_]*(\\.[a-z0-9_]+)*$ and be at most 64 characters",
            ref,
        )
    return event


def _optional_str(frame: dict[str, Any], field: str, ref: Ref) -> str | None:
    value = frame.get(field)
    if value is not None and not isinstance(value, str):
        raise HubError(ErrorCode.BAD_REQUEST, f"{field} must be a string", ref)
    return value


def parse_request(text: str) -> Request:
    """Turn one client text frame into a `Request`, or raise `HubError` saying what is wrong."""
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise HubError(ErrorCode.BAD_REQUEST, "frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise HubError(ErrorCode.BAD_REQUEST, "frame must be a JSON object")
    ref = frame.get("ref")
    if ref is not None and (isinstance(ref, bool) or not isinstance(ref, int | str)):
        raise HubError(ErrorCode.BAD_REQUEST, "ref must be an integer or a string")
    raw_op = frame.get("op")
    if not isinstance(raw_op, str):
        raise HubError(ErrorCode.BAD_REQUEST, "op is required", ref)
    try:
        op = Op(raw_op)
    except ValueError:
        raise HubError(ErrorCode.NOT_FOUND, f"unknown op {raw_op!r}", ref) from None
    tenant = _optional_str(frame, "tenant", ref)
    if tenant is not None:
        check_tenant(tenant, ref)
    if op is Op.PING:
        return Request(op, ref)
    if op is Op.HEARTBEAT:
        data = frame.get("data")
        if not isinstance(data, dict):
            raise HubError(ErrorCode.BAD_REQUEST, "data must be an object", ref)
        return Request(op, ref, data=data)
    room = check_room(frame.get("room"), ref)
    if op is Op.PUBLISH:
        event = check_event_name(frame.get("event"), ref)
        return Request(op, ref, room=room, event=event, data=frame.get("data"), tenant=tenant)
    since = _optional_str(frame, "since", ref)
    if since is not None and not ID_RE.match(since):
        raise HubError(ErrorCode.BAD_REQUEST, "since must be an event id like 1700000000000-0", ref)
    epoch = _optional_str(frame, "epoch", ref)
    return Request(op, ref, room=room, since=since, epoch=epoch, tenant=tenant)


def encode(frame: dict[str, Any]) -> bytes:
    return orjson.dumps(frame)


def error_frame(code: ErrorCode, message: str, ref: Ref) -> bytes:
    return encode({"type": "error", "ref": ref, "code": code, "message": message})


def pong_frame(ref: Ref) -> bytes:
    return encode({"type": "pong", "ref": ref})


def event_frame(room: str, event: str, data: Any, ts: int, event_id: str | None) -> bytes:
    """The one encoding of an event that every receiver in the cluster gets, byte for byte."""
    frame: dict[str, Any] = {"type": "event", "room": room, "event": event, "data": data, "ts": ts}
    if event_id is not None:
        frame["id"] = event_id
    return encode(frame)


_TS_FIELD = b',"ts":'


def ts_of(encoded: bytes) -> int:
    """The `ts` of an encoded event, read off its tail without parsing the JSON: `ts` is
    the last field but `id`, and a `"` inside `data` is always escaped, so the last
    `,"ts":` in the bytes is the event's own."""
    start = encoded.rindex(_TS_FIELD) + len(_TS_FIELD)
    end = encoded.find(b",", start)
    return int(encoded[start : end if end > 0 else -1])


_TEXT_FIN = 0x81
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def websocket_text_frame(payload: bytes) -> bytes:
    """Frame `payload` as one unmasked server-to-client text frame (RFC 6455 section 5.2).

    Server frames carry no mask, so the framed bytes are the same for every socket: the
    hub frames an event once per node and writes those bytes to each receiver.
    """
    size = len(payload)
    if size < 126:
        return _SHORT.pack(_TEXT_FIN, size) + payload
    if size < 65536:
        return _MEDIUM.pack(_TEXT_FIN, 126, size) + payload
    return _LONG.pack(_TEXT_FIN, 127, size) + payload
