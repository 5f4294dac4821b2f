"""The wire contract: names, close codes, client frames in, server frames out.

Pure: no sockets, no event loop. Each kind of client frame parses into its own request
type, so a session dispatches on the type and never trusts that a field is set because
another one is; server frames are built here as bytes.
"""

from __future__ import annotations

import re
import struct
import time
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, TypeGuard

import orjson

from hub.errors import ErrorCode, HubError, Ref
from hub.events import RECEIPT_STATUSES
from hub.history import parse_id

PROTOCOL_VERSION = 1


MAX_POST_FRAMES = 100
"""Client frames one POST to an event stream may carry (a JSON array of them)."""


class Transport(StrEnum):
    """What carries a session: a WebSocket, or the event stream for screens behind proxies
    that refuse upgrades. Operators see how many use each."""

    WEBSOCKET = "websocket"
    STREAM = "stream"


ROOM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}")
TENANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
EVENT_RE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*")
EVENT_MAX_LEN = 64
MAX_DATA_DEPTH = 64
"""How deeply `data` may nest: far more than any event needs, far less than what breaks
the encoder (255 levels for the whole frame)."""


class Close(IntEnum):
    """WebSocket close codes the hub sends."""

    NORMAL = 1000
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    INVALID_DATA = 1007
    POLICY = 1008
    TOO_BIG = 1009
    INTERNAL = 1011
    RESTART = 1012
    TRY_AGAIN = 1013
    HEARTBEAT_TIMEOUT = 4008
    SLOW_CONSUMER = 4009
    RATE_LIMITED = 4029


class Op(StrEnum):
    """What a client frame asks for."""

    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    PUBLISH = "publish"
    HEARTBEAT = "heartbeat"
    PING = "ping"
    REFRESH = "refresh"
    RECEIPT = "receipt"


@dataclass(frozen=True, slots=True)
class Ping:
    """An application-level ping: answered with a `pong`."""

    ref: Ref


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A device's report about itself."""

    ref: Ref
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Join a room, optionally resuming after `since` in `epoch`."""

    ref: Ref
    room: str
    since: str | None
    epoch: str | None
    tenant: str | None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Leave a room."""

    ref: Ref
    room: str
    tenant: str | None


@dataclass(frozen=True, slots=True)
class Timing:
    """When an event stops counting (`ttl`, s) and when clients hand it over (`apply_at`,
    ms since the epoch): each None when not given. `hub.publishing` checks them against the
    room's history TTL and the hub's clock."""

    ttl: int | None = None
    apply_at: int | None = None


NO_TIMING = Timing()
MAX_APPLY_AHEAD_MS = 86_400_000
"""`apply_at` at most a day ahead of the hub's clock."""


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish an event to one room."""

    ref: Ref
    room: str
    event: str
    data: Any
    tenant: str | None
    timing: Timing = NO_TIMING


@dataclass(frozen=True, slots=True)
class Refresh:
    """A new token for this socket, of the same principal."""

    ref: Ref
    token: str


@dataclass(frozen=True, slots=True)
class Receipt:
    """What became of event `id` of a room at this principal: received, done or failed."""

    ref: Ref
    room: str
    id: str
    status: str
    data: dict[str, Any] | None
    tenant: str | None


Request = Ping | Heartbeat | Subscribe | Unsubscribe | Publish | Refresh | Receipt
"""One well-formed client frame."""


def is_room(name: Any) -> bool:
    """Names match whole: a trailing newline is not part of a valid name."""
    return isinstance(name, str) and ROOM_RE.fullmatch(name) is not None


def is_tenant(name: Any) -> bool:
    return isinstance(name, str) and TENANT_RE.fullmatch(name) is not None


def check_room(room: Any) -> str:
    if not is_room(room):
        raise HubError(
            ErrorCode.BAD_REQUEST, "room must match ^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"
        )
    return str(room)


def check_tenant(tenant: Any) -> str:
    if not is_tenant(tenant):
        raise HubError(
            ErrorCode.BAD_REQUEST, "tenant must match ^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
        )
    return str(tenant)


def is_event_name(event: Any) -> TypeGuard[str]:
    return (
        isinstance(event, str)
        and len(event) <= EVENT_MAX_LEN
        and EVENT_RE.fullmatch(event) is not None
    )


def check_event_name(event: Any) -> str:
    if not is_event_name(event):
        raise HubError(
            ErrorCode.BAD_REQUEST,
            "event must match ^[a-z][a-z0-9_]*(\\.[a-z0-9_]+)*$ and be at most 64 characters",
        )
    return event


def check_since(since: Any) -> str | None:
    if since is not None and (not isinstance(since, str) or parse_id(since) is None):
        raise HubError(
            ErrorCode.BAD_REQUEST,
            "since must be an event id like 1700000000000-0 (two integers below 2^64)",
        )
    return since


def check_timing(fields: dict[str, Any]) -> Timing:
    """The `ttl` and `apply_at` of a publish frame or broadcast body, as given."""
    if "ttl" not in fields and "apply_at" not in fields:
        return NO_TIMING
    ttl, apply_at = _whole(fields.get("ttl", 1)), _whole(fields.get("apply_at", 0))
    if ttl is None or ttl < 1:
        raise HubError(ErrorCode.BAD_REQUEST, "ttl must be a whole number of seconds, at least 1")
    if apply_at is None or apply_at < 0:
        raise HubError(
            ErrorCode.BAD_REQUEST, "apply_at must be a time in ms since the epoch (an integer)"
        )
    return Timing(ttl if "ttl" in fields else None, apply_at if "apply_at" in fields else None)


def _whole(value: Any) -> int | None:
    """`value` as an int when JSON would call it an integer (`5.0` is one); else None."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_depth(data: Any) -> Any:
    """Refuse `data` nested deeper than `MAX_DATA_DEPTH`, before anything encodes it."""
    level: list[Any] = [data]
    for _ in range(MAX_DATA_DEPTH + 1):
        level = [
            child
            for value in level
            if isinstance(value, dict | list)
            for child in (value.values() if isinstance(value, dict) else value)
        ]
        if not level:
            return data
    raise HubError(ErrorCode.BAD_REQUEST, f"data is nested deeper than {MAX_DATA_DEPTH} levels")


def _optional_str(frame: dict[str, Any], field: str) -> str | None:
    value = frame.get(field)
    if value is not None and not isinstance(value, str):
        raise HubError(ErrorCode.BAD_REQUEST, f"{field} must be a string")
    return value


def load_object(raw: str | bytes, what: str) -> dict[str, Any]:
    """One JSON object (a client frame, a REST body), or `bad_request` naming `what`."""
    try:
        loaded = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise HubError(ErrorCode.BAD_REQUEST, f"{what} is not valid JSON") from None
    if not isinstance(loaded, dict):
        raise HubError(ErrorCode.BAD_REQUEST, f"{what} must be a JSON object")
    return loaded


def parse_request(text: str) -> Request:
    """Turn one client text frame into its request, or raise `HubError` saying what is
    wrong (with the frame's `ref` when it could be read)."""
    frame = load_object(text, "frame")
    ref = frame.get("ref")
    if not _is_ref(ref):
        raise HubError(ErrorCode.BAD_REQUEST, "ref must be an integer or a string")
    try:
        return _request(frame, ref)
    except HubError as error:
        error.ref = ref
        raise


def _request(frame: dict[str, Any], ref: Ref) -> Request:
    raw_op = frame.get("op")
    if not isinstance(raw_op, str):
        raise HubError(ErrorCode.BAD_REQUEST, "op is required")
    try:
        op = Op(raw_op)
    except ValueError:
        raise HubError(ErrorCode.NOT_FOUND, f"unknown op {raw_op!r}") from None
    tenant = _optional_str(frame, "tenant")
    if tenant is not None:
        check_tenant(tenant)
    if op is Op.PING:
        return Ping(ref)
    if op is Op.REFRESH:
        return Refresh(ref, _nonempty_str(frame, "token"))
    if op is Op.HEARTBEAT:
        data = frame.get("data")
        if not isinstance(data, dict):
            raise HubError(ErrorCode.BAD_REQUEST, "data must be an object")
        return Heartbeat(ref, check_depth(data))
    return _room_request(op, frame, ref, tenant)


def _room_request(op: Op, frame: dict[str, Any], ref: Ref, tenant: str | None) -> Request:
    """A request about one room."""
    room = check_room(frame.get("room"))
    if op is Op.PUBLISH:
        event = check_event_name(frame.get("event"))
        data = check_depth(frame.get("data"))
        return Publish(ref, room, event, data, tenant, check_timing(frame))
    if op is Op.UNSUBSCRIBE:
        return Unsubscribe(ref, room, tenant)
    if op is Op.RECEIPT:
        return _receipt(frame, ref, room, tenant)
    since = check_since(_optional_str(frame, "since"))
    return Subscribe(ref, room, since, _optional_str(frame, "epoch"), tenant)


def _receipt(frame: dict[str, Any], ref: Ref, room: str, tenant: str | None) -> Receipt:
    event_id = frame.get("id")
    if not isinstance(event_id, str) or parse_id(event_id) is None:
        raise HubError(ErrorCode.BAD_REQUEST, "id must be the event's id, like 1700000000000-0")
    status = frame.get("status")
    if not isinstance(status, str) or status not in RECEIPT_STATUSES:
        raise HubError(ErrorCode.BAD_REQUEST, "status must be received, done or failed")
    data = frame.get("data")
    if data is not None and not isinstance(data, dict):
        raise HubError(ErrorCode.BAD_REQUEST, "data must be an object")
    return Receipt(ref, room, event_id, status, check_depth(data), tenant)


def _nonempty_str(frame: dict[str, Any], field: str) -> str:
    value = frame.get(field)
    if not isinstance(value, str) or not value:
        raise HubError(ErrorCode.BAD_REQUEST, f"{field} must be a non-empty string")
    return value


def ref_of(text: str) -> Ref:
    """The `ref` of a frame refused before it is parsed, when it has a valid one."""
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    ref = frame.get("ref") if isinstance(frame, dict) else None
    return ref if _is_ref(ref) else None


def _is_ref(value: Any) -> TypeGuard[Ref]:
    return value is None or (isinstance(value, int | str) and not isinstance(value, bool))


def encode(frame: dict[str, Any]) -> bytes:
    return orjson.dumps(frame)


def welcome_frame(
    conn: str,
    node: str,
    role: str,
    sub: str,
    tenant: str | None,
    rooms: list[str],
    heartbeat: dict[str, float],
    limits: dict[str, float],
    state: dict[str, list[bytes]],
    stream: dict[str, Any] | None = None,
) -> bytes:
    """`state` maps each auto-joined room that has state to its current state events;
    `limits` is how fast the socket may send, for clients to pace themselves; `stream` is
    an event stream's session and where its frames go (`hub.stream`)."""
    fields: dict[str, Any] = {}
    if stream is not None:
        fields["stream"] = stream
    head = encode(
        {
            "type": "welcome",
            "v": PROTOCOL_VERSION,
            "conn": conn,
            "node": node,
            "role": role,
            "sub": sub,
            "tenant": tenant,
            "rooms": rooms,
            "heartbeat": heartbeat,
            "limits": limits,
            "time": now_ms(),
            **fields,
        }
    )
    rooms_state = b",".join(
        orjson.dumps(room) + b":" + _events(events) for room, events in state.items() if events
    )
    return head[:-1] + b',"state":{' + rooms_state + b"}}"


def subscribed_frame(
    ref: Ref, room: str, recovered: bool, epoch: str, last: str | None, state: list[bytes]
) -> bytes:
    """The ack of a subscribe, with the room's state: its events' own bytes, as delivered."""
    head = encode(
        {
            "type": "ack",
            "ref": ref,
            "room": room,
            "recovered": recovered,
            "epoch": epoch,
            "last": last,
        }
    )
    return head[:-1] + b',"state":' + _events(state) + b"}"


def state_body(room: str, events: list[bytes]) -> bytes:
    """`GET /v1/rooms/{room}/state`: the room's current state events."""
    return b'{"room":' + orjson.dumps(room) + b',"events":' + _events(events) + b"}"


def _events(events: list[bytes]) -> bytes:
    """A JSON list of encoded events, spliced without parsing them again."""
    return b"[" + b",".join(events) + b"]"


def unsubscribed_frame(ref: Ref, room: str) -> bytes:
    return encode({"type": "ack", "ref": ref, "room": room})


def receipted_frame(ref: Ref, room: str, event_id: str) -> bytes:
    return encode({"type": "ack", "ref": ref, "room": room, "id": event_id})


def published_frame(ref: Ref, event_id: str | None, ts: int) -> bytes:
    return encode({"type": "ack", "ref": ref, "id": event_id, "ts": ts})


def pong_frame(ref: Ref) -> bytes:
    return encode({"type": "pong", "ref": ref, "time": now_ms()})


def now_ms() -> int:
    """The hub's clock, ms since the epoch: `welcome` and `pong` carry it, so clients can
    tell their own clock's offset from it (and hand events over at `apply_at`)."""
    return int(time.time() * 1000)


def refreshed_frame(ref: Ref, exp: float) -> bytes:
    return encode({"type": "ack", "ref": ref, "exp": _seconds(exp)})


def expiring_frame(exp: float) -> bytes:
    """Sent once, `HUB_REFRESH_NOTICE` before the socket's token expires."""
    return encode({"type": "expiring", "exp": _seconds(exp)})


def _seconds(exp: float) -> int | float:
    """`exp` as a token gives it: a whole number of seconds stays an integer."""
    return int(exp) if float(exp).is_integer() else exp


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
