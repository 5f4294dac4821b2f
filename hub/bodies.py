"""The REST API's bodies and parameters as types, with the limits the parsers apply.

`hub.openapi` asks pydantic for each shape's JSON Schema, so the document says what these
declare. A handler that builds its answer as a dict types it with one of them, and mypy
holds the two together; the answers built as bytes are held to them by the fuzzer of
`tests/test_openapi.py`. Pure: no web framework here.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, NotRequired

from pydantic import ConfigDict, Field, StringConstraints, with_config
from typing_extensions import TypeAliasType, TypedDict

from hub.auth import SUB_RE, Role
from hub.events import FREE_FORM_PREFIX, ReceiptStatus, WebhookEvent
from hub.fleet import MAX_FLEET_LIMIT
from hub.history import ID_PATTERN
from hub.protocol import EVENT_MAX_LEN, EVENT_RE, MAX_POST_FRAMES, ROOM_RE, TENANT_RE

MAX_BODY_BYTES = 1 << 20
MAX_BROADCAST_ROOMS = 100
DEFAULT_HISTORY_LIMIT = 100
MAX_HISTORY_LIMIT = 1000
MAX_PRESENCE_LIMIT = 1000
MAX_WEBHOOK_DELIVERIES = 100
"""The most recent messages an endpoint's delivery log lists."""
WEBHOOK_URL_MAX_LEN = 2048
WEBHOOK_DESCRIPTION_MAX_LEN = 256
IDEMPOTENCY_KEY_MAX_LEN = 128
IDEMPOTENCY_KEY_RE = re.compile(rf"[A-Za-z0-9_.:-]{{1,{IDEMPOTENCY_KEY_MAX_LEN}}}")
CURSOR_MAX_LEN = 600
"""The longest presence cursor (`after`) read."""
ROOM_MAX_LEN = 128
TENANT_MAX_LEN = 64
SUB_MAX_LEN = 256
"""The longest names `ROOM_RE`, `TENANT_RE` and `SUB_RE` take, given again as lengths for
the clients that check a length and not a pattern (`tests/test_openapi.py` holds each to
its pattern)."""


def _whole(pattern: re.Pattern[str]) -> str:
    """The pattern as a JSON Schema pattern, which matches anywhere unless anchored."""
    return f"^{pattern.pattern}$"


Room = TypeAliasType(
    "Room",
    Annotated[str, StringConstraints(pattern=_whole(ROOM_RE), max_length=ROOM_MAX_LEN)],
)
Tenant = TypeAliasType(
    "Tenant",
    Annotated[str, StringConstraints(pattern=_whole(TENANT_RE), max_length=TENANT_MAX_LEN)],
)
EventId = TypeAliasType(
    "EventId",
    Annotated[
        str,
        Field(
            pattern=ID_PATTERN,
            description="Two unsigned 64-bit integers: ms, then a sequence number",
        ),
    ],
)
EventName = Annotated[str, StringConstraints(pattern=_whole(EVENT_RE), max_length=EVENT_MAX_LEN)]
FreeFormName = Annotated[str, StringConstraints(pattern="^" + re.escape(FREE_FORM_PREFIX))]
"""An event whose `data` is any object."""
Name = Annotated[str, StringConstraints(pattern=_whole(SUB_RE), max_length=SUB_MAX_LEN)]
"""A device's `sub`, location or group."""
IdempotencyKey = Annotated[
    str,
    StringConstraints(pattern=_whole(IDEMPOTENCY_KEY_RE), max_length=IDEMPOTENCY_KEY_MAX_LEN),
]
PresenceCursor = Annotated[str, StringConstraints(pattern=" ", max_length=CURSOR_MAX_LEN)]
"""A presence page's `next`: the last member's sub and conn, a space between."""
Online = Literal["true", "false"]
HistoryLimit = Annotated[int, Field(ge=1, le=MAX_HISTORY_LIMIT, default=DEFAULT_HISTORY_LIMIT)]
PresenceLimit = Annotated[int, Field(ge=1, le=MAX_PRESENCE_LIMIT, default=MAX_PRESENCE_LIMIT)]
FleetLimit = Annotated[int, Field(ge=1, le=MAX_FLEET_LIMIT, default=MAX_FLEET_LIMIT)]
WebhookDeliveriesLimit = Annotated[
    int, Field(ge=1, le=MAX_WEBHOOK_DELIVERIES, default=MAX_WEBHOOK_DELIVERIES)
]
RetryAfter = Annotated[int, Field(ge=1)]
StreamSession = Annotated[str, StringConstraints(pattern="^[A-Za-z0-9_-]{22}$")]
"""An event stream's session: 128 random bits in base64url."""
ClientFrames = dict[str, Any] | Annotated[list[dict[str, Any]], Field(max_length=MAX_POST_FRAMES)]
"""What a POST to an event stream carries: one client frame, or an array of them."""
"""Seconds to wait before trying again."""
Unready = Literal["draining", "broker unreachable", "full"]
Heartbeat = dict[str, Any]
"""A device's last heartbeat `data`, with its `time` (ms since the epoch)."""
Next = Annotated[str | None, Field(description="The `after` of the next page; null on the last")]


class ErrorDetail(TypedDict):
    code: str
    message: str


class Error(TypedDict):
    """A refusal: `code` names its kind, `message` says what was wrong."""

    error: ErrorDetail


@with_config(
    ConfigDict(json_schema_extra={"oneOf": [{"required": ["room"]}, {"required": ["rooms"]}]})
)
class Broadcast(TypedDict):
    """Exactly one of `room` and `rooms`; `tenant` for admins only."""

    tenant: NotRequired[Tenant | None]
    room: NotRequired[Room]
    rooms: NotRequired[Annotated[list[Room], Field(min_length=1, max_length=MAX_BROADCAST_ROOMS)]]
    event: EventName
    data: Any
    ttl: NotRequired[
        Annotated[
            int,
            Field(
                ge=1,
                description="Seconds the event counts (at most the room's history TTL): "
                "after it, it is not replayed, not history and not state",
            ),
        ]
    ]
    apply_at: NotRequired[
        Annotated[
            int,
            Field(
                ge=0,
                description="When clients hand the event to the application, ms since the "
                "epoch by the hub's clock (at most 24 h ahead)",
            ),
        ]
    ]


class Published(TypedDict):
    """A broadcast accepted for every room it names."""

    ids: Annotated[
        dict[Room, EventId | None],
        Field(description="Each room's new event id, null where it keeps no history"),
    ]
    ts: Annotated[int, Field(description="When the hub accepted the broadcast, ms since the epoch")]
    reach: Annotated[
        dict[Room, Annotated[int, Field(ge=0)]],
        Field(
            description="How many sockets of the cluster were subscribed to each room when "
            "the event was accepted, as presence knew them (0: nobody is in the room)"
        ),
    ]


class Event(TypedDict):
    """An event frame, as a subscriber receives it."""

    type: Literal["event"]
    room: Room
    event: str
    data: dict[str, Any]
    apply_at: NotRequired[
        Annotated[int, Field(description="When clients hand it over, ms by the hub's clock")]
    ]
    expires: NotRequired[
        Annotated[int, Field(description="When it stops counting (its ttl), ms since the epoch")]
    ]
    ts: Annotated[int, Field(description="When the hub accepted the event, ms since the epoch")]
    id: NotRequired[
        Annotated[
            EventId,
            Field(description="Its place in the room's history; absent where the room keeps none"),
        ]
    ]


class History(TypedDict):
    """A page of a room's retained events, oldest first."""

    room: Room
    epoch: str
    events: Annotated[list[Event], Field(max_length=MAX_HISTORY_LIMIT)]
    last: EventId | None


class State(TypedDict):
    """A room's current state."""

    room: Room
    events: Annotated[
        list[Event],
        Field(description="The newest event of each state name (HUB_STATE_EVENTS), ordered by id"),
    ]


class Receipt(TypedDict):
    """A principal's latest receipt for an event."""

    sub: str
    role: Role
    status: ReceiptStatus
    time: Annotated[int, Field(description="ms since the epoch")]
    data: NotRequired[dict[str, Any]]


class Receipts(TypedDict):
    room: Room
    id: EventId
    receipts: list[Receipt]


class Member(TypedDict):
    """One socket in a room."""

    sub: str
    role: Role
    node: str
    conn: str
    since: Annotated[int, Field(description="When it joined the room, ms since the epoch")]
    heartbeat: Annotated[
        Heartbeat | None,
        Field(description="A device's last heartbeat; null for others, and before the first"),
    ]


class Presence(TypedDict):
    room: Room
    members: Annotated[list[Member], Field(max_length=MAX_PRESENCE_LIMIT)]
    next: Next


class Device(TypedDict):
    """A device of the fleet, online or not."""

    sub: str
    online: bool
    loc: str | None
    groups: list[str]
    node: Annotated[str | None, Field(description="The node it is connected to; null offline")]
    since: Annotated[int, Field(description="When it went online or offline, ms since the epoch")]
    last_seen: Annotated[int, Field(description="ms since the epoch")]
    heartbeat: Heartbeat | None
    offline_reason: Annotated[str | None, Field(description="Why it went offline; null online")]


class Fleet(TypedDict):
    devices: Annotated[list[Device], Field(max_length=MAX_FLEET_LIMIT)]
    next: Next


Connections = dict[str, int]
"""`total`, and one count per role."""
Traffic = TypedDict("Traffic", {"in": int, "out": int})
"""Events accepted for publishing; event frames written to sockets."""


class Messages(Traffic):
    dropped: int
    per_second: dict[str, float]


class Queue(TypedDict):
    """Bytes written to sockets and not yet sent, and the sockets that hold them."""

    bytes: int
    sockets: int


class Capacity(TypedDict):
    max_connections: int
    utilization: float


class TenantShare(TypedDict):
    connections: Connections
    rooms: int
    messages: Traffic


class NodeFigures(TypedDict):
    """One node, whole."""

    node: str
    connections: Connections
    rooms: int
    messages: Messages
    dropped: dict[str, int]
    queue: Queue
    capacity: Capacity
    draining: bool
    broker_up: bool
    tenants: dict[str, TenantShare]


class TenantNodeFigures(TypedDict):
    """An operator's tenant's share of one node."""

    node: str
    tenant: str
    connections: Connections
    rooms: int
    messages: Traffic
    draining: bool


class ClusterFigures(TypedDict):
    """Every live node, summed, and each of them."""

    connections: Connections
    rooms: int
    messages: Messages
    dropped: dict[str, int]
    queue: Queue
    capacity: Capacity
    draining: bool
    draining_nodes: int
    nodes: list[NodeFigures]


class TenantClusterFigures(TypedDict):
    """An operator's tenant's share of every live node, summed."""

    tenant: str
    connections: Connections
    rooms: int
    messages: Traffic
    nodes: int


class Stats(TypedDict):
    node: NodeFigures | TenantNodeFigures
    cluster: ClusterFigures | TenantClusterFigures | None
    cluster_error: NotRequired[
        Annotated[str, Field(description="Why `cluster` is null: Redis could not be read")]
    ]


class Health(TypedDict):
    status: Literal["ok"]
    node: str


class Readiness(TypedDict):
    ready: bool
    reason: NotRequired[Unready]
    node: str


class Handshake(TypedDict):
    """A WebSocket handshake with this token would be accepted now."""

    accepted: Literal[True]
    node: str


WebhookId = Annotated[str, StringConstraints(pattern="^[A-Za-z0-9_-]{1,64}$")]
"""An endpoint's id, or a message's (`webhook-id`)."""
WebhookUrl = Annotated[
    str,
    StringConstraints(pattern="^[Hh][Tt][Tt][Pp][Ss]?://", max_length=WEBHOOK_URL_MAX_LEN),
]
WebhookEvents = Annotated[
    list[WebhookEvent], Field(min_length=1, max_length=3, json_schema_extra={"uniqueItems": True})
]


class WebhookRegistration(TypedDict):
    """An endpoint to register; `tenant` for admins only."""

    url: Annotated[
        WebhookUrl,
        Field(
            description="http:// or https://; one resolving to a loopback, private or "
            "link-local address is refused unless HUB_WEBHOOK_ALLOW_PRIVATE"
        ),
    ]
    events: Annotated[WebhookEvents, Field(description="The status events to send it, no repeat")]
    description: NotRequired[
        Annotated[str | None, StringConstraints(max_length=WEBHOOK_DESCRIPTION_MAX_LEN)]
    ]
    tenant: NotRequired[Tenant | None]


class Webhook(TypedDict):
    """A registered endpoint, without its secret."""

    id: WebhookId
    url: WebhookUrl
    events: WebhookEvents
    description: str | None
    created: Annotated[int, Field(description="When it was registered, ms since the epoch")]


class WebhookCreated(Webhook):
    """A registered endpoint, with the secret its messages are signed with: shown only now."""

    secret: Annotated[
        str,
        StringConstraints(pattern="^whsec_[A-Za-z0-9+/=]{32,}$"),
        Field(description="Standard Webhooks secret: whsec_ and base64 of the key"),
    ]


class Webhooks(TypedDict):
    webhooks: list[Webhook]


class WebhookDelivery(TypedDict):
    """One message to an endpoint, as it stands."""

    id: Annotated[WebhookId, Field(description="The message's webhook-id, the same on retries")]
    type: WebhookEvent
    device: Annotated[str, Field(description="The device (or receipt's sub) it is about")]
    time: Annotated[int, Field(description="When it happened, ms since the epoch")]
    state: Literal["pending", "delivered", "failed"]
    attempts: Annotated[int, Field(ge=0)]
    status: Annotated[int | None, Field(description="The last attempt's HTTP status")]
    error: Annotated[str | None, Field(description="Why the last attempt failed, if it did")]
    next: Annotated[int | None, Field(description="The next attempt, ms since the epoch")]


class WebhookDeliveries(TypedDict):
    """An endpoint's recent messages, newest first."""

    webhook: WebhookId
    deliveries: Annotated[list[WebhookDelivery], Field(max_length=MAX_WEBHOOK_DELIVERIES)]


class WebhookRetried(TypedDict):
    id: WebhookId
    state: Literal["pending"]
