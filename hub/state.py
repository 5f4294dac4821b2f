"""A room's current state: which events are state, and the snapshot a subscriber gets.

Pure. The newest event of each state name in a room is kept beside its history (by the
broker, in the same atomic step that appends and publishes it), for `ttl` seconds unless
a newer one of the name replaces it.
"""

from __future__ import annotations

from collections.abc import Iterable

from hub.envelope import ID_FIELD, id_of, ts_of


class StateEvents:
    """The event names that are state: exact names, and prefixes given as `name.*`."""

    __slots__ = ("_names", "_prefixes", "ttl")

    def __init__(self, listed: Iterable[str], ttl: float) -> None:
        listed = list(listed)
        self._names = frozenset(name for name in listed if not name.endswith(".*"))
        self._prefixes = tuple(name[:-1] for name in listed if name.endswith(".*"))
        self.ttl = ttl

    def of(self, event: str) -> bool:
        """Whether `event` is a state event."""
        return event in self._names or (bool(self._prefixes) and event.startswith(self._prefixes))

    @property
    def ttl_ms(self) -> int:
        return int(self.ttl * 1000)


def snapshot(events: Iterable[bytes], now_ms: int, ttl_ms: int) -> list[bytes]:
    """The state events still within `ttl_ms` (by their `ts`), ordered by id (by `ts` in a
    room without history, whose events have no id)."""
    kept = [event for event in events if ts_of(event) > now_ms - ttl_ms]
    return sorted(kept, key=_order)


def _order(event: bytes) -> tuple[int, int]:
    return id_of(event) if ID_FIELD in event else (ts_of(event), 0)
