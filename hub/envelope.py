"""The bytes of an event: the one encoding every receiver in the cluster gets.

An event is `{"type":"event","room":…,"event":…,"data":…,"ts":…,"id":"…"}`, encoded once by
the node that accepts it. `ts` and `id` are its last fields, so both are read off its tail
without parsing the JSON (a `"` inside `data` is always escaped, so the last `,"ts":` and
`,"id":"` in the bytes are the event's own). The id is only known once the broker appends
the event to its room's history, so the node cuts the encoded event where the id goes
(`parts`) and the broker splices it in: the Lua below is built from the same constants.

An event may carry `apply_at` and `expires` (both ms) just before `ts`: `expires` is read
off the tail the same way, so history, resume and state leave an expired event out
without parsing it (`live`). Whatever ends `data` (an object) is never a digit, so a digit
just before `,"ts":` is one of these fields'.

While tracing is on, pub/sub may carry an event with its publisher's trace context in
front (`traced`): an event starts with `{`, a `traceparent` never holds one, so a
subscriber tells the two apart by the first byte and hands on the event alone.
"""

from __future__ import annotations

from typing import Any

import orjson

TS_FIELD = b',"ts":'
ID_FIELD = b',"id":"'
ID_END = b'"}'
END = b"}"


EXPIRES_FIELD = b',"expires":'
_DIGITS = frozenset(b"0123456789")


def encode(
    room: str,
    event: str,
    data: Any,
    ts: int,
    apply_at: int | None = None,
    expires: int | None = None,
) -> bytes:
    """The event without its id."""
    fields: dict[str, Any] = {"type": "event", "room": room, "event": event, "data": data}
    if apply_at is not None:
        fields["apply_at"] = apply_at
    if expires is not None:
        fields["expires"] = expires
    fields["ts"] = ts
    return orjson.dumps(fields)


def expires_of(encoded: bytes) -> int | None:
    """The `expires` of an encoded event, None when it has none."""
    end = encoded.rindex(TS_FIELD)
    start = end
    while start > 0 and encoded[start - 1] in _DIGITS:
        start -= 1
    if start == end or not encoded.endswith(EXPIRES_FIELD, 0, start):
        return None
    return int(encoded[start:end])


def live(events: list[bytes], now_ms: int) -> list[bytes]:
    """The events not expired at `now_ms` (the same list when none carries `expires`)."""
    if not any(EXPIRES_FIELD in event for event in events):
        return events
    return [event for event in events if not _expired(event, now_ms)]


def _expired(event: bytes, now_ms: int) -> bool:
    expires = expires_of(event)
    return expires is not None and expires <= now_ms


OPEN = ord("{")
"""The first byte of every event: a pub/sub message starting otherwise is `traced`."""


def traced(carrier: bytes, event: bytes) -> bytes:
    """A pub/sub message: the event with the trace context `carrier` in front."""
    return carrier + event


def untraced(message: bytes) -> tuple[bytes, bytes]:
    """A traced pub/sub message's trace context and its event; no event (`b""`) in a
    message that holds none."""
    start = message.find(b"{")
    return (message[:start], message[start:]) if start >= 0 else (message, b"")


def parts(encoded: bytes, *, keeps_history: bool) -> tuple[bytes, bytes]:
    """Cut an encoded event so that `prefix + id + suffix` is the event with its id; a
    room without history gives its events no id, and `prefix + suffix` is the event."""
    if not keeps_history:
        return encoded, b""
    return encoded[: -len(END)] + ID_FIELD, ID_END


def ts_of(encoded: bytes) -> int:
    """The `ts` of an encoded event, with or without its id."""
    start = encoded.rindex(TS_FIELD) + len(TS_FIELD)
    end = encoded.find(b",", start)
    return int(encoded[start : end if end > 0 else -len(END)])


def id_of(encoded: bytes) -> tuple[int, int]:
    """The id of an encoded event (or of a framed one: the frame header is in front)."""
    start = encoded.rindex(ID_FIELD) + len(ID_FIELD)
    ms, _, seq = encoded[start : -len(ID_END)].partition(b"-")
    return int(ms), int(seq)


_HEAD_TAIL = b'""}' + TS_FIELD + b"0" + END


def head(room: str, event: str, data: dict[str, Any]) -> bytes:
    """An event cut just before the value of its data's last field (a string), so that
    whoever finishes it (a script, perhaps on another node after this one died) adds only
    that value, the time and the id: `LUA`'s `finish`, and `finish` below."""
    *_, last = data
    return encode(room, event, {**data, last: ""}, 0)[: -len(_HEAD_TAIL)]


def finish(cut: bytes, value: str, ts: int) -> bytes:
    """The event `head` cut, with `value` (a JSON string) as its last field, at `ts`;
    without its id."""
    return cut + orjson.dumps(value) + END + TS_FIELD + str(ts).encode() + END


LUA = f"""
local ID_FIELD, ID_END, TS_FIELD, END = [[{ID_FIELD.decode()}]], [[{ID_END.decode()}]],
  [[{TS_FIELD.decode()}]], [[{END.decode()}]]

-- An event `head` cut (see hub/envelope.py) finished with the JSON string `value` at
-- `now` (ms), cut where the id goes: returns prefix, suffix.
local function finish(head, value, now, keeps_history)
  local body = head .. '"' .. value .. '"' .. END .. TS_FIELD .. string.format('%.0f', now)
  if not keeps_history then return body .. END, '' end
  return body .. ID_FIELD, ID_END
end
"""
