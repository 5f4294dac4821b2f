"""This node's open sockets: who may open one (admission), how many of each role, what
waits to be written to them, and closing them all, spread out, when the node drains."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from enum import StrEnum
from typing import Any

from hub.auth import Principal
from hub.broker import BrokerUnavailable
from hub.config import Settings
from hub.disconnect import DRAINING
from hub.logs import decision
from hub.protocol import Transport
from hub.ratelimit import KeyedBuckets
from hub.session import Session
from hub.stats import ROLES, TRANSPORTS

log = logging.getLogger("hub")

CLOSE_GRACE = 6.0
"""How long a drain waits, after its last close, for sockets to finish closing (a peer
that does not answer its close frame is dropped after 5 s)."""


def _decrement(counter: Counter[Any], key: Any) -> None:
    """Count one less, forgetting keys at zero: the counter holds only what is open."""
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


class Refusal(StrEnum):
    """Why a socket is refused at once."""

    FULL = "full"
    DRAINING = "draining"
    RATE_LIMITED = "rate_limited"
    QUOTA = "quota"
    """The token's subject, or its tenant, holds as many sockets here as it may."""


class Sockets:
    """Keeps this node's open sockets: admits, counts and drains them."""

    def __init__(self, settings: Settings) -> None:
        self.max_connections = settings.max_connections
        rate = settings.connect_rate
        self._handshakes = KeyedBuckets(rate, max(rate, 1.0)) if rate > 0 else None
        self._open: dict[Session, Transport] = {}
        self._roles: Counter[str] = Counter()
        self._transports: Counter[str] = Counter()
        self._subs: Counter[tuple[str | None, str]] = Counter()
        self._tenants: dict[str, Counter[str]] = {}
        """Open sockets of each tenant, by role."""
        self._tenant_streams: Counter[str] = Counter()
        """Of those, the ones on an event stream."""
        self._per_sub = settings.max_sockets_per_sub
        self._per_tenant = settings.max_sockets_per_tenant
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

    def over_quota(self, principal: Principal) -> str | None:
        """Why `principal` may not open one more socket on this node, if it may not: one
        token must not take every socket of a node."""
        if self._per_sub and self._subs[principal.tenant, principal.sub] >= self._per_sub:
            return f"at most {self._per_sub} sockets per subject on a node"
        tenant = principal.tenant
        if self._per_tenant and tenant is not None:
            held = self._tenants.get(tenant)
            if held is not None and held.total() >= self._per_tenant:
                return f"at most {self._per_tenant} sockets per tenant on a node"
        return None

    def add(self, session: Session, transport: Transport = Transport.WEBSOCKET) -> None:
        principal = session.principal
        self._open[session] = transport
        self._roles[principal.role.value] += 1
        self._transports[transport] += 1
        self._subs[principal.tenant, principal.sub] += 1
        if principal.tenant is not None:
            self._tenants.setdefault(principal.tenant, Counter())[principal.role.value] += 1
            if transport is Transport.STREAM:
                self._tenant_streams[principal.tenant] += 1

    def remove(self, session: Session) -> None:
        if session not in self._open:
            return
        principal = session.principal
        transport = self._open.pop(session)
        self._transports[transport] -= 1
        self._roles[principal.role.value] -= 1
        _decrement(self._subs, (principal.tenant, principal.sub))
        if principal.tenant is not None:
            held = self._tenants[principal.tenant]
            if transport is Transport.STREAM:
                _decrement(self._tenant_streams, principal.tenant)
            _decrement(held, principal.role.value)
            if not held:
                del self._tenants[principal.tenant]
        if not self._open:
            self._emptied.set()

    @staticmethod
    def failed(session: Session, error: Exception) -> None:
        """Say why a session ended in an error. Its caller awaits the session itself, with
        no coroutine of ours between: a socket's suspended call chain is its memory, for
        days (each frame of it costs every open socket about 0.2 KiB)."""
        if isinstance(error, BrokerUnavailable):
            log.warning(
                "closed %s: broker unavailable while joining its rooms",
                session.id,
                extra=session.log_fields,
            )
        else:
            log.error(
                "closed %s after an internal error",
                session.id,
                exc_info=error,
                extra=session.log_fields,
            )

    def by_tenant(self) -> dict[str, dict[str, int]]:
        """Each tenant's open sockets on this node, by role."""
        return {
            tenant: {role: held[role] for role in ROLES} for tenant, held in self._tenants.items()
        }

    def by_role(self) -> dict[str, int]:
        """Open sockets of every role, none left out."""
        return {role: self._roles[role] for role in ROLES}

    def tenant_transports(self) -> dict[str, dict[str, int]]:
        """Each tenant's open sessions on this node, by what carries them."""
        shares: dict[str, dict[str, int]] = {}
        for tenant, held in self._tenants.items():
            streams = self._tenant_streams[tenant]
            sockets = held.total() - streams
            shares[tenant] = {Transport.WEBSOCKET: sockets, Transport.STREAM: streams}
        return shares

    def by_transport(self) -> dict[str, int]:
        """Open sessions by what carries them, none left out."""
        return {transport: self._transports[transport] for transport in TRANSPORTS}

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
        decision(log, "drain_started", "draining", sockets=len(victims), seconds=seconds)
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
        decision(log, "drain_ended", "drained", closed=len(victims), left=len(self._open))
