"""This node's open sockets: who may open one (admission), how many of each role, what
waits to be written to them, and closing them all, spread out, when the node drains."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from enum import StrEnum

from hub.config import Settings
from hub.disconnect import DRAINING
from hub.ratelimit import KeyedBuckets
from hub.session import Session
from hub.stats import ROLES

log = logging.getLogger("hub")

CLOSE_GRACE = 6.0
"""How long a drain waits, after its last close, for sockets to finish closing (a peer
that does not answer its close frame is dropped after 5 s)."""


class Refusal(StrEnum):
    """Why a socket is refused at once."""

    FULL = "full"
    DRAINING = "draining"
    RATE_LIMITED = "rate_limited"


class Sockets:
    """Keeps this node's open sockets: admits, counts and drains them."""

    def __init__(self, settings: Settings) -> None:
        self.max_connections = settings.max_connections
        rate = settings.connect_rate
        self._handshakes = KeyedBuckets(rate, max(rate, 1.0)) if rate > 0 else None
        self._open: dict[Session, None] = {}
        self._roles: Counter[str] = Counter()
        self.draining = False
        self._emptied = asyncio.Event()

    def handshake_wait(self, client: str | None) -> float:
        """0.0 when `client` may open a socket now, else the seconds it should wait."""
        if self._handshakes is None:
            return 0.0
        return self._handshakes.take(client)

    def refusal(self) -> Refusal | None:
        """Why an accepted socket must be closed at once, if it must."""
        if self.draining:
            return Refusal.DRAINING
        if self.full:
            return Refusal.FULL
        return None

    @property
    def full(self) -> bool:
        return len(self._open) >= self.max_connections

    def add(self, session: Session) -> None:
        self._open[session] = None
        self._roles[session.principal.role.value] += 1

    def remove(self, session: Session) -> None:
        if session in self._open:
            del self._open[session]
            self._roles[session.principal.role.value] -= 1
            if not self._open:
                self._emptied.set()

    def by_role(self) -> dict[str, int]:
        """Open sockets of every role, none left out."""
        return {role: self._roles[role] for role in ROLES}

    def backlog(self) -> tuple[int, int]:
        """Bytes waiting to be written, all sockets together, and how many sockets have some."""
        total = sockets = 0
        for session in list(self._open):
            waiting = session.buffered()
            if waiting:
                total += waiting
                sockets += 1
        return total, sockets

    async def drain(self, seconds: float) -> None:
        """Refuse new sockets, and close every open one with 1012, evenly over `seconds`, so
        that their clients do not all reconnect to the other nodes at the same moment."""
        self.draining = True
        victims = list(self._open)
        random.shuffle(victims)
        log.info("draining %d sockets over %g s", len(victims), seconds)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for n, session in enumerate(victims):
            due = start + seconds * n / len(victims)
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            session.close(DRAINING)
        if self._open:
            self._emptied.clear()
            try:
                await asyncio.wait_for(self._emptied.wait(), CLOSE_GRACE)
            except TimeoutError:
                log.warning("%d sockets still closing at the end of the drain", len(self._open))
