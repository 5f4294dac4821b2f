"""One account of a node's Redis outages, however many of its parts notice them.

Every part that talks to Redis (the subscriber, publishes, presence) reports its failures
here. The first is logged at once, saying whether Redis was ever reached and where; later
ones only at growing intervals, with how long the outage has lasted; the first success
ends it. A Redis that is down for an hour costs a dozen lines, not thousands.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from hub.logs import decision
from hub.redact import safe_url

log = logging.getLogger("hub.redis")

FIRST_REMINDER = 10.0
"""Seconds into an outage of the first "still unreachable" line; each next one doubles."""
LONGEST_SILENCE = 300.0


class Outage:
    """Whether Redis answers, as the node's parts find it."""

    def __init__(self, url: str, now: Callable[[], float] = time.monotonic) -> None:
        self.where = safe_url(url)
        self._now = now
        self._reached = False
        self._since: float | None = None
        self._remind_at = 0.0
        self._reminder = FIRST_REMINDER

    def failed(self, part: str, error: BaseException) -> None:
        now = self._now()
        if self._since is None:
            self._since, self._reminder = now, FIRST_REMINDER
            self._remind_at = now + self._reminder
            if self._reached:
                decision(
                    log,
                    "redis_lost",
                    f"redis at {self.where} lost ({part}): {error}",
                    logging.WARNING,
                    part=part,
                )
            else:
                log.warning("redis at %s has not been reached (%s): %s", self.where, part, error)
        elif now >= self._remind_at:
            self._reminder = min(self._reminder * 2, LONGEST_SILENCE)
            self._remind_at = now + self._reminder
            log.warning(
                "redis at %s still unreachable after %.0f s: %s",
                self.where,
                now - self._since,
                error,
            )

    def answered(self) -> None:
        if self._since is not None:
            again = "reachable again" if self._reached else "reached"
            lasted = round(self._now() - self._since)
            text = f"redis at {self.where} {again} after {lasted:.0f} s"
            decision(log, "redis_back", text, logging.WARNING, outage_seconds=lasted)
            self._since = None
        elif not self._reached:
            log.info("redis at %s reached", self.where)
        self._reached = True
