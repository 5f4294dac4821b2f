"""The bytes of the messages nodes send each other about stream sessions: a request for
the node that holds a session, its reply, and a canary a node sends itself (pure).

This module alone knows the layout. A request is `q`, a JSON header (request number,
sender, session, sub, tenant), a newline, then the POST body as it came: JSON never holds
a raw newline, so the first one ends the header, and the body is carried byte for byte,
never escaped or grown. A reply is `a` and a JSON `[number, status]`.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

REQUEST = b"q"
REPLY = b"a"
CANARY = b"c"
"""The whole of a canary: it says only that the channel carries."""
_END = b"\n"


@dataclass(frozen=True, slots=True)
class Request:
    """Frames POSTed for a session, and whose token sent them."""

    session: str
    sub: str
    tenant: str | None
    body: bytes


@dataclass(frozen=True, slots=True)
class Incoming:
    """A request another node sent this one: answer `number` to `sender`."""

    number: int
    sender: str
    request: Request


@dataclass(frozen=True, slots=True)
class Reply:
    """The holder's status for the request `number`."""

    number: int
    status: int


def request(number: int, sender: str, sent: Request) -> bytes:
    header = orjson.dumps([number, sender, sent.session, sent.sub, sent.tenant])
    return REQUEST + header + _END + sent.body


def reply(number: int, status: int) -> bytes:
    return REPLY + orjson.dumps([number, status])


def parse(payload: bytes) -> Incoming | Reply | None:
    """The message `payload` holds; None for a canary or for what no node sends."""
    kind = payload[:1]
    try:
        if kind == REQUEST:
            end = payload.index(_END)
            number, sender, session, sub, tenant = orjson.loads(payload[1:end])
            if _ints(number) and _strs(sender, session, sub) and (tenant is None or _strs(tenant)):
                return Incoming(number, sender, Request(session, sub, tenant, payload[end + 1 :]))
        elif kind == REPLY:
            number, status = orjson.loads(payload[1:])
            if _ints(number, status):
                return Reply(number, status)
    except (ValueError, TypeError):
        return None
    return None


def _ints(*values: object) -> bool:
    return all(type(value) is int for value in values)


def _strs(*values: object) -> bool:
    return all(isinstance(value, str) for value in values)
