"""What webhooks are made of: a tenant's endpoints, the messages its `status` events
become, and each message's delivery to one endpoint. Pure."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, get_args

import orjson

from hub.events import WebhookEvent

EVENTS: tuple[WebhookEvent, ...] = get_args(WebhookEvent)
"""The `status` events a webhook can carry, by the name the room gives them, in the order
`WebhookEvent` lists them (the order error messages name them in)."""
ONLINE: WebhookEvent = "device.online"
OFFLINE: WebhookEvent = "device.offline"
RECEIPT: WebhookEvent = "delivery.receipt"
"""The events the delivery treats apart, each typed as one of `WebhookEvent`'s names."""
_SUBJECT: dict[WebhookEvent, str] = {ONLINE: "device", OFFLINE: "device", RECEIPT: "sub"}
"""The field of each event's data that names the device it is about."""


class State(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A URL a tenant registered, and the events it hears about."""

    id: str
    url: str
    events: tuple[str, ...]
    description: str | None
    created: int
    """When it was registered (ms)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "events": list(self.events),
            "description": self.description,
            "created": self.created,
        }

    @classmethod
    def of(cls, record: dict[str, Any]) -> Endpoint:
        """The endpoint `as_json` wrote (with or without other fields)."""
        return cls(
            record["id"],
            record["url"],
            tuple(record["events"]),
            record.get("description"),
            int(record["created"]),
        )


@dataclass(frozen=True, slots=True)
class Message:
    """One `status` event as a webhook: the same id and body for every endpoint."""

    id: str
    type: str
    device: str
    time: int
    """The event's `ts` (ms)."""
    body: bytes


def message_id(tenant: str, entry: str) -> str:
    """The `webhook-id` of the message made of the tenant's `status` event `entry` (its id
    in the room's history): the same on every retry, whichever node sends it."""
    digest = hashlib.blake2b(f"{tenant}/{entry}".encode(), digest_size=12).hexdigest()
    return f"msg_{digest}"


def message_of(tenant: str, entry: str, event: bytes) -> Message | None:
    """The message an encoded `status` event makes, or None for an event no webhook
    carries (heartbeats) or one that is not an event at all."""
    try:
        decoded = orjson.loads(event)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(decoded, dict):
        return None
    name, data, ts = decoded.get("event"), decoded.get("data"), decoded.get("ts")
    if name not in _SUBJECT or not isinstance(data, dict) or not isinstance(ts, int):
        return None
    device = data.get(_SUBJECT[name])
    body = orjson.dumps({"type": name, "tenant": tenant, "time": ts, "data": data})
    return Message(message_id(tenant, entry), name, str(device or ""), ts, body)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message to one endpoint: where it stands."""

    id: str
    """The message's `webhook-id`."""
    type: str
    device: str
    time: int
    state: State
    attempts: int
    status: int | None
    """The last attempt's HTTP status; None before the first or when none came."""
    error: str | None
    next: int | None
    """When the next attempt is due (ms); None once delivered or failed."""
    created: int
    """When the message was taken for the endpoint (ms): retries end some hours after."""
    seq: int = 0
    """Its place among the endpoint's messages: they are sent in this order."""

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "device": self.device,
            "time": self.time,
            "state": self.state.value,
            "attempts": self.attempts,
            "status": self.status,
            "error": self.error,
            "next": self.next,
        }

    def record(self) -> bytes:
        """How a store keeps it (its `seq` is kept beside it)."""
        return orjson.dumps({**self.as_json(), "created": self.created})

    @classmethod
    def of(cls, record: bytes | str, seq: int) -> Delivery:
        """The delivery `record` wrote."""
        kept = orjson.loads(record)
        status, following = kept.get("status"), kept.get("next")
        return cls(
            kept["id"],
            kept["type"],
            kept["device"],
            int(kept["time"]),
            State(kept["state"]),
            int(kept["attempts"]),
            None if status is None else int(status),
            kept.get("error"),
            None if following is None else int(following),
            int(kept["created"]),
            seq,
        )


def first_delivery(message: Message, now: int, grace_ms: int, seq: int) -> Delivery:
    """A message just taken for an endpoint; a `device.offline` waits out the grace, so
    that a device back within it never shows as gone."""
    due = max(now, message.time + grace_ms) if message.type == OFFLINE else now
    return Delivery(
        message.id,
        message.type,
        message.device,
        message.time,
        State.PENDING,
        0,
        None,
        None,
        due,
        now,
        seq,
    )
