"""Room history: event ids and retention rules. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hub.errors import ErrorCode, HubError

MAX_PART = 2**64 - 1
"""Each half of an id is an unsigned 64-bit integer, as in a Redis stream id."""
LAST_ID = f"{MAX_PART}-{MAX_PART}"
"""The largest id: nothing can follow it."""


def _at_most(limit: int) -> str:
    """A regular expression for the decimal numbers from 0 to `limit` (leading zeros
    allowed, no more digits than `limit` has)."""
    top = str(limit)
    shorter = f"[0-9]{{1,{len(top) - 1}}}"
    below = [
        f"{top[:at]}[0-{int(digit) - 1}][0-9]{{{len(top) - at - 1}}}"
        for at, digit in enumerate(top)
        if digit != "0"
    ]
    return "|".join([shorter, *below, top])


PART = f"(?:{_at_most(MAX_PART)})"
ID_PATTERN = f"^({PART})-({PART})$"
"""An id, exactly: what the checks and the API document both use."""
ID_RE = re.compile(ID_PATTERN)


def parse_id(text: str) -> tuple[int, int] | None:
    """`<ms>-<seq>` as a pair of integers, or None when it is not an id."""
    match = ID_RE.fullmatch(text)
    if match is None:
        return None
    return int(match[1]), int(match[2])


def format_id(pair: tuple[int, int]) -> str:
    return f"{pair[0]}-{pair[1]}"


@dataclass(frozen=True, slots=True)
class Retention:
    """How many events a room keeps, and for how long."""

    size: int
    ttl: float

    @property
    def keeps_history(self) -> bool:
        return self.size > 0

    @property
    def ttl_ms(self) -> int:
        return int(self.ttl * 1000)


class RetentionRules:
    """Retention per room: the deployment's default, overridden by the longest room prefix.

    The one place a room's retention is decided: whoever publishes to a room or reads its
    history asks here and hands the answer on with the request.
    """

    def __init__(self, default: Retention, overrides: dict[str, Retention]) -> None:
        self.default = default
        self._overrides = sorted(overrides.items(), key=lambda item: -len(item[0]))

    def for_room(self, room: str) -> Retention:
        for prefix, rule in self._overrides:
            if room.startswith(prefix):
                return rule
        return self.default


@dataclass(frozen=True, slots=True)
class TenantBounds:
    """What one tenant may put into the shared history store: published bytes a second
    (with a burst), and rooms holding history at once. 0 turns a bound off."""

    publish_bytes: float
    publish_burst: float
    history_rooms: int

    def refusal(self, verdict: str) -> TenantLimited:
        """The refusal a broker reports as `verdict`: `bytes:<ms to wait>` or `rooms`."""
        kind, _, wait = verdict.partition(":")
        if kind == "bytes":
            return TenantLimited(
                "publish_bytes",
                f"the tenant publishes over {self.publish_bytes:g} bytes/s, retry later",
                retry_after=int(wait) / 1000,
            )
        return TenantLimited(
            "history_rooms", f"the tenant keeps history in {self.history_rooms} rooms already"
        )


class TenantLimited(HubError):
    """A publish refused by one of its tenant's bounds (`bound` names which)."""

    def __init__(self, bound: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(ErrorCode.RATE_LIMITED, message, retry_after=retry_after)
        self.bound = bound
