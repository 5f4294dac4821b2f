"""The fleet: every device of a tenant seen within `HUB_FLEET_TTL`, online or not.

Pure: what a listing asks for and what it answers. Presence keeps the fleet, in the same
atomic steps that decide a device's `device.online` and `device.offline` (so the two never
disagree), and answers `FleetQuery`s with `FleetPage`s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hub.auth import SUB_RE
from hub.errors import ErrorCode, HubError

MAX_FLEET_LIMIT = 1000
SCAN_BUDGET = 10_000
"""Devices one page looks at, at most: with filters that skip most of a large fleet, a
page may then hold fewer than `limit` devices and still have a `next`."""
FORGET_BATCH = 4
"""Devices last seen longer than the TTL ago that one connect looks at: few enough to keep
every connect short, and still more than the one device a connect can add."""

Device = dict[str, Any]
"""`sub`, `online`, `loc`, `groups`, `node` (None offline), `since` (ms of the last online
or offline), `last_seen` (ms), `heartbeat` (the last, with its `time`, or None),
`offline_reason` (None online)."""


@dataclass(frozen=True, slots=True)
class FleetQuery:
    """One page of the fleet: devices after `after` in `sub` order, matching every filter
    given."""

    limit: int = MAX_FLEET_LIMIT
    after: str | None = None
    loc: str | None = None
    group: str | None = None
    online: bool | None = None

    def matches(self, device: Device) -> bool:
        return (
            (self.loc is None or device["loc"] == self.loc)
            and (self.group is None or self.group in device["groups"])
            and (self.online is None or device["online"] is self.online)
        )


@dataclass(frozen=True, slots=True)
class FleetPage:
    devices: list[Device]
    next: str | None
    """The `after` of the next page; None on the last."""


def _name(params: Mapping[str, str], field: str) -> str | None:
    value = params.get(field)
    if value is not None and SUB_RE.fullmatch(value) is None:
        raise HubError(
            ErrorCode.BAD_REQUEST, f"{field} must be 1 to 256 characters without controls"
        )
    return value


def parse_query(params: Mapping[str, str], limit: int) -> FleetQuery:
    """The filters of `GET /v1/devices` (`limit` already parsed)."""
    online = params.get("online")
    if online not in (None, "true", "false"):
        raise HubError(ErrorCode.BAD_REQUEST, "online must be true or false")
    return FleetQuery(
        limit=limit,
        after=_name(params, "after"),
        loc=_name(params, "loc"),
        group=_name(params, "group"),
        online=None if online is None else online == "true",
    )
