"""Room history: event ids, retention rules, and reading an id off an event's bytes.

Pure. An event's bytes end with `"id":"<id>"}` (the id is spliced in by the broker when it
appends the event to the room's history), so the id of an encoded event is read from its
tail without parsing the JSON.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

ID_FIELD = b',"id":"'
ID_END = b'"}'


def parse_id(text: str) -> tuple[int, int] | None:
    """`<ms>-<seq>` as a pair of integers, or None when it is not an id."""
    ms, dash, seq = text.partition("-")
    if not dash or not ms.isdigit() or not seq.isdigit():
        return None
    return int(ms), int(seq)


def format_id(pair: tuple[int, int]) -> str:
    return f"{pair[0]}-{pair[1]}"


def id_of(encoded: bytes) -> tuple[int, int]:
    """The id of an encoded event (or of a framed one: the frame header is in front)."""
    start = encoded.rindex(ID_FIELD) + len(ID_FIELD)
    ms, _, seq = encoded[start : -len(ID_END)].partition(b"-")
    return int(ms), int(seq)


def split_for_id(encoded_without_id: bytes) -> tuple[bytes, bytes]:
    """Cut an encoded event object so that `prefix + id + suffix` is the event with its id."""
    return encoded_without_id[:-1] + ID_FIELD, ID_END


@dataclass(frozen=True, slots=True)
class Retention:
    size: int
    ttl: float


class RetentionRules:
    """Retention per room: the deployment's default, overridden by the longest room prefix."""

    def __init__(self, default: Retention, overrides: dict[str, Retention]) -> None:
        self.default = default
        self._overrides = sorted(overrides.items(), key=lambda item: -len(item[0]))

    @classmethod
    def parse(cls, size: int, ttl: float, overrides: str | None) -> RetentionRules:
        """`overrides` is JSON: `{"status": {"size": 100, "ttl": 600}, "device:": {...}}`."""
        default = Retention(size, ttl)
        rules: dict[str, Retention] = {}
        for prefix, rule in (orjson.loads(overrides) if overrides else {}).items():
            rules[prefix] = Retention(int(rule.get("size", size)), float(rule.get("ttl", ttl)))
        return cls(default, rules)

    def for_room(self, room: str) -> Retention:
        for prefix, rule in self._overrides:
            if room.startswith(prefix):
                return rule
        return self.default
