"""Where webhooks are kept, behind one interface: the endpoints, each endpoint's messages,
which node delivers a tenant's messages, and the tenant's `status` events read into
messages. `hub.webhooks.memory` keeps them in this process, `hub.webhooks.redis` in Redis
for a cluster; the dispatcher and the service work the same on either."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from hub.webhooks.model import Delivery, Endpoint

KEEP_FINISHED = 100
"""Delivered or failed messages each endpoint keeps for its delivery log."""
READ_BATCH = 200
"""`status` events one read takes per tenant."""


@dataclass(frozen=True, slots=True)
class Held:
    """A tenant's webhooks as the node that delivers them starts from."""

    endpoints: list[tuple[Endpoint, str]]
    """Each endpoint with its sealed secret."""
    pending: dict[str, list[Delivery]]
    """Each endpoint's pending messages, in order."""


@dataclass(slots=True)
class Polled:
    """What one read of a tenant's `status` events changed."""

    held: bool = True
    """False: this node no longer delivers for the tenant (its lease went to another node,
    or it has no endpoint left)."""
    reload: bool = False
    """Endpoints or messages changed other than by this read (a registration, a removal, a
    retry asked for): the node loads the tenant again."""
    added: list[tuple[str, Delivery]] = field(default_factory=list)
    """New pending messages, by endpoint id, in order."""
    dropped: list[tuple[str, str]] = field(default_factory=list)
    """(endpoint id, webhook id) taken back: an offline whose device came back in time."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(endpoint id, webhook id) failed unsent: the endpoint's backlog was full."""


class Store(ABC):
    """Endpoints and messages; the tenants whose messages this node delivers (a lease
    each, so that one node at a time sends them, in order); and what is new in the
    tenants' `status` rooms."""

    lease: float
    """Seconds a tenant's lease lasts unless renewed."""

    @abstractmethod
    async def start(self) -> None:
        """Begin taking `status` events."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop taking them."""

    @abstractmethod
    async def add(self, tenant: str, endpoint: Endpoint, sealed: str, most: int) -> bool:
        """Register `endpoint` with its sealed secret; False, adding nothing, when the
        tenant already has `most`. Messages from the tenant's next `status` event on are
        its."""

    @abstractmethod
    async def endpoints(self, tenant: str) -> list[Endpoint]:
        """The tenant's endpoints, oldest first."""

    @abstractmethod
    async def remove(self, tenant: str, endpoint_id: str) -> bool:
        """Forget an endpoint and its messages; False when there is no such endpoint."""

    @abstractmethod
    async def deliveries(self, tenant: str, endpoint_id: str, limit: int) -> list[Delivery] | None:
        """The endpoint's `limit` newest messages, pending or finished, newest first;
        None when there is no such endpoint."""

    @abstractmethod
    async def retry(self, tenant: str, endpoint_id: str, webhook_id: str, now: int) -> bool:
        """Make a message pending again, due `now`, its attempts kept; False when the
        endpoint does not have it."""

    @abstractmethod
    async def share(self) -> tuple[list[str], int]:
        """The tenants that have endpoints, and how many nodes share their delivery."""

    @abstractmethod
    async def acquire(self, tenants: list[str]) -> list[str]:
        """Take the lease of each of `tenants` that no node holds; those taken."""

    @abstractmethod
    async def renew(self, tenants: list[str]) -> list[str]:
        """Extend the leases this node holds; those it still held."""

    @abstractmethod
    async def release(self, tenants: list[str]) -> None:
        """Give up the leases, so that another node takes the tenants at once."""

    @abstractmethod
    async def load(self, tenant: str) -> Held:
        """The tenant's endpoints and pending messages, for the node that holds it."""

    @abstractmethod
    async def poll(self, tenants: list[str], now: int) -> dict[str, Polled]:
        """Turn each held tenant's new `status` events into pending messages, kept and
        marked read in one step (a node that dies never loses nor doubles one)."""

    @abstractmethod
    async def body(self, tenant: str, endpoint_id: str, webhook_id: str) -> bytes | None:
        """The body of a message; None once the endpoint no longer has it."""

    @abstractmethod
    async def settle(self, tenant: str, endpoint_id: str, delivery: Delivery) -> None:
        """Keep what an attempt came to: still pending (its next attempt), or finished."""
