"""Why a socket closes: one value, made where the decision is, carried to the close frame
and to the device's `device.offline` event alike.

Nothing maps a close code back to a reason later: the code, the close frame's reason and
the offline reason travel together from the decision to everything that reports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from hub.protocol import Close


class Gone(StrEnum):
    """Why a device went offline: the `reason` of `device.offline`."""

    CLOSED = "closed"
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    PING_TIMEOUT = "ping_timeout"
    NODE_LOST = "node_lost"
    NODE_RESTART = "node_restart"
    BROKER_LOST = "broker_lost"
    SLOW_CONSUMER = "slow_consumer"
    RATE_LIMITED = "rate_limited"
    TOKEN_EXPIRED = "token_expired"
    POLICY = "policy"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Disconnect:
    """A close the hub decides: the close frame's `code` and `reason`, and what the
    socket's device is reported offline with."""

    code: Close
    reason: str
    gone: Gone


HEARTBEAT_TIMEOUT = Disconnect(Close.HEARTBEAT_TIMEOUT, "heartbeat timeout", Gone.HEARTBEAT_TIMEOUT)
SLOW_CONSUMER = Disconnect(Close.SLOW_CONSUMER, "slow consumer", Gone.SLOW_CONSUMER)
RATE_LIMITED = Disconnect(Close.RATE_LIMITED, "rate limited", Gone.RATE_LIMITED)
TOKEN_EXPIRED = Disconnect(Close.POLICY, "token expired", Gone.TOKEN_EXPIRED)
BINARY_FRAME = Disconnect(Close.UNSUPPORTED_DATA, "binary frames are not accepted", Gone.POLICY)
DRAINING = Disconnect(Close.RESTART, "node draining", Gone.NODE_RESTART)
SHUTDOWN = Disconnect(Close.RESTART, "server shutdown", Gone.NODE_RESTART)
FULL = Disconnect(Close.TRY_AGAIN, "node full", Gone.CLOSED)
BROKER_UNAVAILABLE = Disconnect(Close.TRY_AGAIN, "broker unavailable", Gone.ERROR)
BROKER_LOST = Disconnect(Close.RESTART, "broker subscription lost", Gone.BROKER_LOST)
"""The node stopped receiving a room's events: its members reconnect and resume."""
INTERNAL_ERROR = Disconnect(Close.INTERNAL, "internal error", Gone.ERROR)
PING_TIMEOUT = Disconnect(Close.INTERNAL, "ping timeout", Gone.PING_TIMEOUT)
INVALID_UTF8 = Disconnect(Close.INVALID_DATA, "invalid UTF-8 in a text frame", Gone.POLICY)
PEER_CLOSED = Disconnect(Close.NORMAL, "", Gone.CLOSED)
"""The peer closed, or the connection broke: not a decision of the hub's."""


def refused_frame(code: int, reason: str) -> Disconnect:
    """The close of a frame the WebSocket parser refused (malformed, too large), with the
    parser's code and reason."""
    close = Close(code)
    return Disconnect(close, reason, Gone.ERROR if close is Close.INTERNAL else Gone.POLICY)
