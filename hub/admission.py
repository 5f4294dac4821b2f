"""Who may open a socket: the handshake's checks in their order, one call, one answer."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter
from starlette.requests import HTTPConnection

from hub.auth import Authenticator, AuthError, Principal, bearer
from hub.disconnect import DRAINING, FULL, Disconnect
from hub.errors import ErrorCode, HubError
from hub.sockets import Refusal, Sockets

CLOSE_FOR = {Refusal.FULL: FULL, Refusal.DRAINING: DRAINING}


@dataclass(frozen=True, slots=True)
class Denied:
    """A handshake refused: why (`hub_handshakes_refused_total`'s reason, or the token's
    `unauthorized` / `forbidden`), what the client is told, and, for a node that is full
    or draining, the close that follows the upgrade (a browser reads a close's code, not
    a refused handshake's status)."""

    reason: str
    error: HubError
    close: Disconnect | None = None


class Admission:
    """The handshake's checks: the client address's handshake rate, the token, the
    quotas of its subject and tenant, then whether the node takes sockets at all."""

    def __init__(self, sockets: Sockets, auth: Authenticator, refused: Counter) -> None:
        self._sockets = sockets
        self._auth = auth
        self._refused = refused

    async def admit(self, connection: HTTPConnection, *, socket: bool) -> Principal | Denied:
        """The principal, or why it is refused. Refusals are counted for sockets only,
        but for the handshake rate and quotas, which a probe uses up as a socket does."""
        sockets = self._sockets
        client = connection.client.host if connection.client else None
        wait = sockets.handshake_wait(client)
        if wait > 0:
            error = HubError(ErrorCode.RATE_LIMITED, "too many handshakes", retry_after=wait)
            return self._count(Denied(Refusal.RATE_LIMITED.value, error))
        try:
            principal = await self._auth.verify(bearer(connection, query=True), socket=True)
        except AuthError as failed:
            error = failed.refusal()
            return Denied(error.code.value, error)
        quota = sockets.over_quota(principal)
        if quota is not None:
            error = HubError(ErrorCode.RATE_LIMITED, quota)
            return self._count(Denied(Refusal.QUOTA.value, error))
        unavailable = sockets.refusal()
        if unavailable is not None:
            error = HubError(ErrorCode.UNAVAILABLE, f"the node is {unavailable.value}")
            refused = Denied(unavailable.value, error, CLOSE_FOR[unavailable])
            return self._count(refused) if socket else refused
        return principal

    def _count(self, refused: Denied) -> Denied:
        self._refused.labels(refused.reason).inc()
        return refused
