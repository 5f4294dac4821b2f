"""The mailbox interface: requests for stream sessions, carried from the node a POST
reached to the node that holds the session's stream, and the holder's status back.

A stream session lives on the node that holds its `GET /v1/stream`, while the load
balancer sends its POSTs to any node. The holder `register`s each session it holds; any
node `forward`s a POST for a session it does not hold and answers with the holder's
status. Every status is an HTTP status: 202 the frames were taken, 403 the token is not
the session's, 404 no node holds the session, 503 try again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from hub.mailbox.messages import Request

OnRequest = Callable[[str, str, str | None, bytes], Awaitable[int]]
"""Runs on the holder: `(session, sub, tenant, body)` to the request's status (202, 403 or
404). It is awaited one request at a time, in arrival order, so it should take the frames
and return, not wait for their answers."""

REPLY_TIMEOUT = 5.0
"""Seconds a forward waits for the holder's status."""
FORWARDS_IN_FLIGHT = 1024
"""Forwards a node has under way at once; past it a forward answers 503 at once. Each
holds its request's body until it ends, so this bounds what forwards keep of memory."""

ACCEPTED = int(HTTPStatus.ACCEPTED)
FORBIDDEN = int(HTTPStatus.FORBIDDEN)
NOT_FOUND = int(HTTPStatus.NOT_FOUND)
UNAVAILABLE = int(HTTPStatus.SERVICE_UNAVAILABLE)


async def no_sessions(session: str, sub: str, tenant: str | None, body: bytes) -> int:  # noqa: ARG001
    """The holder's answer on a node that serves no stream sessions: none is held."""
    return NOT_FOUND


class Mailbox(ABC):
    """Where the stream sessions are held, and the requests sent to their holders."""

    def __init__(self) -> None:
        self._forwards = 0

    @property
    def forwards(self) -> int:
        """Forwards under way on this node."""
        return self._forwards

    @property
    @abstractmethod
    def available(self) -> bool:
        """Whether requests reach this node's sessions now, and its forwards' replies."""

    @abstractmethod
    async def start(self, on_request: OnRequest) -> None:
        """Start taking requests for the sessions this node registers, for `on_request`."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop for good: requests for this node's sessions are answered 404 from now on."""

    @abstractmethod
    async def register(self, session: str) -> None:
        """This node now holds `session`: forwards for it come here. Raises
        `BrokerUnavailable` when the cluster could not be told (then nothing is kept)."""

    @abstractmethod
    async def unregister(self, session: str) -> None:
        """This node holds `session` no longer: forwards for it answer 404."""

    async def forward(self, session: str, sub: str, tenant: str | None, body: bytes) -> int:
        """The status of the node that holds `session` for the frames in `body` (202, 403,
        404), 404 when no node holds it, or 503 when the cluster cannot carry the request
        now or this node has `FORWARDS_IN_FLIGHT` under way.

        A holder that does not answer within `REPLY_TIMEOUT` is answered 404: it died or
        lost its way to the others, and its stream with it, so the client is told to open
        a new stream (on any node) rather than to retry frames no node will take.
        """
        if self._forwards >= FORWARDS_IN_FLIGHT:
            return UNAVAILABLE
        self._forwards += 1
        try:
            return await self._forward(Request(session, sub, tenant, body))
        finally:
            self._forwards -= 1

    @abstractmethod
    async def _forward(self, request: Request) -> int:
        """`forward`, within its bound."""
