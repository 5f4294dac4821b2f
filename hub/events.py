"""Typed events: the schema of each event's `data`, and who may publish it.

`x.*` events carry any JSON object. Every other name needs a schema here; unknown fields
are kept (producers may add fields ahead of consumers), wrong or missing ones are refused.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError

from hub.errors import ErrorCode, HubError

FREE_FORM_PREFIX = "x."


class _Data(BaseModel):
    """The data of a typed event: strict types, unknown fields kept."""

    model_config = ConfigDict(extra="allow", strict=True)


class DeviceOnline(_Data):
    """`device.online`: a device's first socket in the cluster opened."""

    device: str
    node: str
    loc: str | None = None


class DeviceOffline(_Data):
    """`device.offline`: a device's last socket went, and why."""

    device: str
    node: str
    reason: str


class DeviceHeartbeat(_Data):
    """`device.heartbeat`: what a device reported about itself."""

    device: str
    status: str
    content: str | None = None
    cpu: float | None = None
    mem: float | None = None
    temp: float | None = None
    uptime: float | None = None


class ContentUpdate(_Data):
    """`content.update`: a piece of content changed."""

    content_id: str
    url: str | None = None
    version: int | str | None = None


class PlaylistUpdate(_Data):
    """`playlist.update`: a playlist changed."""

    playlist_id: str
    items: list[JsonValue] | None = None


class Command(_Data):
    """`command`: something for a device to do."""

    name: str
    args: dict[str, JsonValue] | None = None


class Alert(_Data):
    """`alert`: a message for people."""

    level: Literal["info", "warning", "critical"]
    message: str


ReceiptStatus = Literal["received", "done", "failed"]
RECEIPT_STATUSES = frozenset(get_args(ReceiptStatus))


class DeliveryReceipt(_Data):
    """`delivery.receipt`: a principal got (or ran) an event of a room."""

    sub: str
    role: str
    room: str
    id: str
    status: ReceiptStatus
    data: dict[str, JsonValue] | None = None


WebhookEvent = Literal["device.online", "device.offline", "delivery.receipt"]
"""The status events a webhook endpoint may ask for: what a back office acts on."""
WEBHOOK_EVENTS = frozenset(get_args(WebhookEvent))

HUB_ONLY: dict[str, type[_Data]] = {
    "device.online": DeviceOnline,
    "device.offline": DeviceOffline,
    "device.heartbeat": DeviceHeartbeat,
    "delivery.receipt": DeliveryReceipt,
}
PUBLIC: dict[str, type[_Data]] = {
    "content.update": ContentUpdate,
    "playlist.update": PlaylistUpdate,
    "command": Command,
    "alert": Alert,
}


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in ("data", *first["loc"]))
    more = error.error_count() - 1
    return f"{where}: {first['msg']}" + (f" (and {more} more)" if more else "")


def check_event(event: str, data: Any) -> None:
    """Refuse an event a client may not publish, or whose data does not fit its schema."""
    if event in HUB_ONLY:
        raise HubError(ErrorCode.FORBIDDEN, f"{event} is published by the hub only")
    if event.startswith(FREE_FORM_PREFIX):
        if not isinstance(data, dict):
            raise HubError(ErrorCode.BAD_REQUEST, "data: must be an object")
        return
    model = PUBLIC.get(event)
    if model is None:
        raise HubError(
            ErrorCode.NOT_FOUND,
            f"unknown event {event!r}: use a typed event or an x.* name for free-form data",
        )
    validate(model, data)


def validate(model: type[_Data], data: Any) -> None:
    """Check `data` against a schema; the error names the first wrong field."""
    if not isinstance(data, dict):
        raise HubError(ErrorCode.BAD_REQUEST, "data: must be an object")
    try:
        model.model_validate(data)
    except ValidationError as error:
        raise HubError(ErrorCode.BAD_REQUEST, _describe(error)) from None
