"""Full-jitter exponential backoff, for anything that reconnects, and a client's retries:
the backoff, but short for a while after a node said it was restarting."""

from __future__ import annotations

import random
import time

RESTART = 1012
"""The close of a node that is draining or restarting: it comes back soon."""
RESTART_CAP = 5.0
"""The longest wait before a retry in the `RESTART_WINDOW` seconds after a 1012. A lone
node's drain answers every retry with 1012 until it stops, and a backoff doubling to its
cap meanwhile kept clients away for up to half a minute after the node was back."""
RESTART_WINDOW = 60.0
"""Seconds after a 1012 in which a node is expected back: past them, the backoff doubles
to its cap again."""
NO_CLOSE_FRAME = 1006
"""The close code of a connection that ended without a close frame (dropped, refused)."""


class Backoff:
    """Delays drawn uniformly from [0, min(cap, base * 2**attempt)]; `reset` after a success.

    Full jitter spreads a crowd of reconnecting clients evenly instead of in waves.
    """

    def __init__(self, base: float = 0.1, cap: float = 10.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.base * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        return random.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class Retries:
    """The wait before a client's next attempt: full jitter, doubling to the backoff's cap,
    but only to `RESTART_CAP` within `RESTART_WINDOW` of a node's 1012, while its tries end
    in 1012 again or in no answer (a node restarting). A crowd still spreads over the
    jitter, and comes back seconds after the node, not up to the cap after it. Any other
    answer (full, rate-limited, unavailable) ends that: the backoff, which counted every
    try meanwhile, goes on doubling from where it stands."""

    def __init__(self, backoff: Backoff) -> None:
        self._backoff = backoff
        self._soon = Backoff(backoff.base, min(backoff.cap, RESTART_CAP))
        self._restarted: float | None = None
        """When a node last closed a connection with 1012 (`time.monotonic`)."""

    def next(self) -> float:
        later = self._backoff.next()
        restarted = self._restarted
        if restarted is not None and time.monotonic() - restarted < RESTART_WINDOW:
            return self._soon.next()
        return later

    def closed(self, code: int | None) -> None:
        """A connection closed with `code` (None: it had no close code)."""
        if code == RESTART:
            self._restarted = time.monotonic()
        elif code is not None and code != NO_CLOSE_FRAME:
            self._restarted = None

    def answered(self) -> None:
        """The node answered an opening with something else than a connection."""
        self._restarted = None

    def reset(self) -> None:
        """A connection came up: the next trouble starts from the beginning."""
        self._backoff.reset()
        self._soon.reset()
        self._restarted = None


def reconnect_backoff() -> Backoff:
    """The waits between a background task's tries at what failed it (Redis, a round of
    webhook deliveries): up to 0.1 s, doubling to 5 s."""
    return Backoff(base=0.1, cap=5.0)
