"""Webhooks as the rest of the hub sees them: register, list and remove a tenant's
endpoints, read an endpoint's delivery log, retry a message; start and stop the delivery.
`memory_webhooks` and `redis_webhooks` build one for a node alone or for a cluster."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from hub.config import Settings
from hub.errors import ErrorCode, HubError
from hub.metrics import Metrics
from hub.protocol import now_ms
from hub.webhooks import guard, signing
from hub.webhooks.attempts import POLL_INTERVAL, Timing
from hub.webhooks.dispatcher import Dispatcher
from hub.webhooks.model import EVENTS, Delivery, Endpoint
from hub.webhooks.sealing import Sealer
from hub.webhooks.sender import Sender
from hub.webhooks.store import Store

if TYPE_CHECKING:  # a node alone never loads the Redis client
    from hub.broker.memory import MemoryBroker
    from hub.redis.clients import Clients

MAX_DESCRIPTION = 256
NO_KEY = (
    "webhooks need HUB_WEBHOOK_KEY (at least 32 characters), or HUB_JWT_SECRET, to keep "
    "their secrets encrypted"
)


class Webhooks:
    """A node's webhooks: what any node answers, and the delivery this node takes part in."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        sender: Sender,
        metrics: Metrics,
        *,
        poll: float = POLL_INTERVAL,
    ) -> None:
        self._store = store
        self._sender = sender
        self._allow_private = settings.webhook_allow_private
        self._most = settings.webhook_max_endpoints
        self._sealer = _sealer(settings)
        timing = Timing(settings.webhook_retry_base, settings.webhook_retry_hours, poll)
        self._dispatcher = Dispatcher(store, sender, self._sealer, timing, metrics)
        metrics.webhook_pending.set_function(self._dispatcher.pending)
        metrics.webhook_oldest_pending.set_function(self._dispatcher.oldest_pending)

    async def start(self) -> None:
        await self._store.start()
        self._dispatcher.start()

    async def stop(self) -> None:
        """Stop delivering; what is pending stays with the store (in Redis, for the other
        nodes; in memory, lost)."""
        await self._dispatcher.stop()
        await self._store.stop()
        await self._sender.close()

    async def register(
        self, tenant: str, url: Any, events: Any, description: Any
    ) -> tuple[Endpoint, str]:
        """A new endpoint and its secret, which is shown this once and kept only sealed.
        HubError `bad_request` for what is wrong with the request, `conflict` when the
        tenant has its most endpoints, `unavailable` when no key seals secrets."""
        if self._sealer is None:
            raise HubError(ErrorCode.UNAVAILABLE, NO_KEY)
        heard = _events(events)
        if description is not None and not isinstance(description, str):
            raise HubError(ErrorCode.BAD_REQUEST, "description must be a string")
        if description is not None and len(description) > MAX_DESCRIPTION:
            raise HubError(
                ErrorCode.BAD_REQUEST, f"description is longer than {MAX_DESCRIPTION} characters"
            )
        target = guard.check_url(url)
        await guard.resolve(target, self._allow_private)
        endpoint = Endpoint(
            f"wh_{secrets.token_urlsafe(12)}", target.url, heard, description, now_ms()
        )
        secret = signing.new_secret()
        sealed = self._sealer.seal(secret, f"{tenant}/{endpoint.id}")
        if not await self._store.add(tenant, endpoint, sealed, self._most):
            raise HubError(
                ErrorCode.CONFLICT,
                f"the tenant already has {self._most} webhook endpoints "
                "(HUB_WEBHOOK_MAX_ENDPOINTS): remove one first",
            )
        self._dispatcher.claim_soon()
        return endpoint, secret

    async def endpoints(self, tenant: str) -> list[Endpoint]:
        return await self._store.endpoints(tenant)

    async def remove(self, tenant: str, endpoint_id: str) -> bool:
        return await self._store.remove(tenant, endpoint_id)

    async def deliveries(self, tenant: str, endpoint_id: str, limit: int) -> list[Delivery] | None:
        """The endpoint's `limit` newest messages, newest first; None: no such endpoint."""
        return await self._store.deliveries(tenant, endpoint_id, limit)

    async def retry(self, tenant: str, endpoint_id: str, webhook_id: str) -> bool:
        """Send a message again now, whatever its state (its attempts kept); False when
        the endpoint does not have it."""
        return await self._store.retry(tenant, endpoint_id, webhook_id, now_ms())


def _events(events: Any) -> tuple[str, ...]:
    if not isinstance(events, list) or not events:
        raise HubError(
            ErrorCode.BAD_REQUEST, f"events must be a non-empty list of {', '.join(EVENTS)}"
        )
    unknown = [event for event in events if event not in EVENTS]
    if unknown:
        raise HubError(
            ErrorCode.BAD_REQUEST,
            f"unknown event {unknown[0]!r} in events: use {', '.join(EVENTS)}",
        )
    if len(set(events)) != len(events):
        raise HubError(ErrorCode.BAD_REQUEST, "events lists an event twice")
    return tuple(events)


def _sealer(settings: Settings) -> Sealer | None:
    """The key of the secrets: HUB_WEBHOOK_KEY's, else HUB_JWT_SECRET's, whose previous
    secrets still open what they sealed while it rotates."""
    if settings.webhook_key:
        return Sealer(settings.webhook_key)
    if settings.jwt_secret:
        return Sealer(settings.jwt_secret, settings.jwt_previous_secrets)
    return None


def memory_webhooks(settings: Settings, metrics: Metrics, broker: MemoryBroker) -> Webhooks:
    """The webhooks of a node alone, fed by its in-process `broker`."""
    from hub.webhooks.memory import MemoryStore

    store = MemoryStore(broker, settings.webhook_max_pending, settings.webhook_offline_grace)
    return Webhooks(settings, store, Sender(settings.webhook_allow_private), metrics)


def redis_webhooks(
    settings: Settings,
    metrics: Metrics,
    connections: Clients,
    run: str,
    *,
    lease: float | None = None,
    poll: float = POLL_INTERVAL,
) -> Webhooks:
    """The webhooks of a node of a cluster, kept in Redis (`connections.writes`); `run`
    names this node as the holder of tenants' leases."""
    from hub.webhooks.redis import LEASE_OF_NODE_TTL, RedisStore

    store = RedisStore(
        connections.writes,
        run,
        settings.webhook_max_pending,
        settings.webhook_offline_grace,
        settings.node_ttl * LEASE_OF_NODE_TTL if lease is None else lease,
    )
    sender = Sender(settings.webhook_allow_private)
    return Webhooks(settings, store, sender, metrics, poll=poll)
