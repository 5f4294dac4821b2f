"""The answer to each request a socket sends, and the state those answers keep: the half
of a session that `hub.session.Session` runs once a frame is parsed.

Each kind of frame is its own request type (`hub.protocol`), dispatched by type; the
tenant and rights rules are the principal's (`hub.auth`), shared with REST; refusals
become `error` frames in one place (`_refuse`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import assert_never

from hub.auth import AuthError, Principal
from hub.disconnect import INTERNAL_ERROR, TOKEN_EXPIRED, Disconnect
from hub.errors import ErrorCode, HubError, Ref, error_frame
from hub.events import DeviceHeartbeat, check_event, validate
from hub.presence import Present
from hub.protocol import (
    Heartbeat,
    Ping,
    Publish,
    Receipt,
    Refresh,
    Request,
    Subscribe,
    Unsubscribe,
    expiring_frame,
    pong_frame,
    published_frame,
    receipted_frame,
    refreshed_frame,
    subscribed_frame,
    unsubscribed_frame,
    websocket_text_frame,
)
from hub.publishing import Published
from hub.ratelimit import TokenBucket
from hub.rooms import RoomKey
from hub.sender import Sender
from hub.session_parts import SessionParts
from hub.stats import Dropped
from hub.tracing import UNTRACED

log = logging.getLogger("hub")

MAX_PUBLISHING = 64
"""Publishes one socket may have in flight."""

HEARTBEAT_BURST = 5
RECEIPT_BURST = 20
FAILED = HubError(ErrorCode.UNAVAILABLE, "internal error: not carried out")
"""Answered as it is, never raised: a raised one would keep its traceback, and with it the
frames of the session that raised it, alive in a module global."""


class Answers:
    """A session's answers to its requests, and what they keep of the socket."""

    __slots__ = (
        "_beats",
        "_expiry",
        "_parts",
        "_present",
        "_publishing",
        "_receipts",
        "_rooms",
        "id",
        "principal",
        "sender",
    )

    def __init__(self, parts: SessionParts, principal: Principal, sender: Sender) -> None:
        self._parts = parts
        self.principal = principal
        self.sender = sender
        self.id = parts.next_conn_id()
        self._rooms: set[RoomKey] = set()
        self._beats: TokenBucket | None = None
        """A device's heartbeat rate, made at its first heartbeat."""
        self._receipts: TokenBucket | None = None
        """The socket's receipt rate, made at its first receipt."""
        self._present: Present | None = None
        self._publishing = 0
        self._expiry: asyncio.TimerHandle | None = None
        """The socket's one timer: the `expiring` notice, then the close at the token's exp."""

    def close(self, cause: Disconnect) -> None:
        self.sender.close(cause)

    @property
    def log_fields(self) -> dict[str, str | None]:
        """What a log line about this socket carries (`extra=`), for JSON logs."""
        principal = self.principal
        return {
            "conn": self.id,
            "sub": principal.sub,
            "role": principal.role.value,
            "tenant": principal.tenant,
        }

    def _refuse(self, error: HubError, ref: Ref) -> None:
        self._parts.metrics.refusals.labels(error.code.value).inc()
        self.sender.reply(error_frame(error, ref))

    async def _dispatch(self, request: Request) -> None:
        match request:
            case Ping():
                self.sender.reply(pong_frame(request.ref))
            case Subscribe():
                await self._subscribe(request)
            case Unsubscribe():
                await self._unsubscribe(request)
            case Publish():
                await self._publish(request)
            case Heartbeat():
                self._heartbeat(request)
            case Refresh():
                await self._refresh(request)
            case Receipt():
                await self._receipt(request)
            case _:
                assert_never(request)

    async def _subscribe(self, request: Subscribe) -> None:
        parts, principal, room = self._parts, self.principal, request.room
        key = RoomKey(principal.tenant_for(request.tenant), room)
        principal.check_subscribe(room)
        known = key in self._rooms
        most = parts.settings.max_rooms_per_socket
        if not known and len(self._rooms) >= most:
            raise HubError(ErrorCode.TOO_LARGE, f"a socket may be in at most {most} rooms")
        self._rooms.add(key)
        sender = self.sender
        # Live events wait while the replay and the ack go out at the pace the peer reads.
        sender.hold()
        try:
            result = await parts.node.subscribe(key, sender, request.since, request.epoch)
        except BaseException:
            sender.release()
            if not known:
                self._rooms.discard(key)
                await parts.node.leave(key, sender)
            raise
        if self._present is not None:
            parts.presence.join(self._present, key)
        ack = subscribed_frame(
            request.ref, room, result.recovered, result.epoch, result.last, result.state
        )
        try:
            await sender.write_paced([*result.replay, websocket_text_frame(ack), *result.live])
        finally:
            sender.release()

    async def _unsubscribe(self, request: Unsubscribe) -> None:
        key = RoomKey(self.principal.tenant_for(request.tenant), request.room)
        if key in self._rooms:
            self._rooms.discard(key)
            await self._parts.node.leave(key, self.sender)
            if self._present is not None:
                self._parts.presence.leave(self._present, key)
        self.sender.reply(unsubscribed_frame(request.ref, request.room))

    async def _publish(self, request: Publish) -> None:
        """Hand the event to the broker and go on reading: the ack follows when it is
        published, so a socket may have several publishes in flight (in order), up to
        `MAX_PUBLISHING`; past that it waits, and stops reading, until one completes."""
        principal = self.principal
        tenant = principal.tenant_for(request.tenant)
        principal.check_publish(request.room)
        check_event(request.event, request.data)
        parts = self._parts
        trace = UNTRACED
        if parts.tracer.on:
            trace = parts.tracer.publish(
                "socket", tenant, [request.room], request.event, conn=self.id
            )
        published = parts.publisher.publish_soon(
            tenant, [request.room], request.event, request.data, request.timing, trace=trace
        )
        self._publishing += 1
        published.add_done_callback(lambda done: self._acknowledge(request, done))
        if self._publishing > MAX_PUBLISHING:
            await asyncio.wait([published])

    def _acknowledge(self, request: Publish, published: asyncio.Future[Published]) -> None:
        """Answer a publish, whatever became of it."""
        self._publishing -= 1
        error = None if published.cancelled() else published.exception()
        if published.cancelled() or (error is not None and not isinstance(error, HubError)):
            log.error("publish on %s failed", self.id, exc_info=error, extra=self.log_fields)
            self._refuse(FAILED, request.ref)
            self.close(INTERNAL_ERROR)
        elif isinstance(error, HubError):
            self._refuse(error, request.ref)
        else:
            done = published.result()
            self.sender.reply(published_frame(request.ref, done.ids[request.room], done.ts))

    def _forget_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()

    def _watch_expiry(self) -> None:
        """Time the token's end: the `expiring` notice `HUB_REFRESH_NOTICE` before it (at
        once when less is left), then the close at `exp` unless a refresh came."""
        self._forget_expiry()
        loop = asyncio.get_running_loop()
        left = max(0.0, self.principal.exp - time.time())
        notice = self._parts.settings.refresh_notice
        if notice > 0:
            self._expiry = loop.call_at(loop.time() + max(0.0, left - notice), self._expiring)
        else:
            self._close_at_exp()

    def _expiring(self) -> None:
        self.sender.reply(expiring_frame(self.principal.exp))
        self._close_at_exp()

    def _close_at_exp(self) -> None:
        loop = asyncio.get_running_loop()
        left = max(0.0, self.principal.exp - time.time())
        self._expiry = loop.call_at(loop.time() + left, self.sender.close, TOKEN_EXPIRED)

    async def _refresh(self, request: Refresh) -> None:
        """Take a new token of the same principal: its rights apply from now on, and the
        socket lives until its `exp`."""
        try:
            fresh = await self._parts.verify(request.token)
        except AuthError as error:
            raise HubError(ErrorCode.FORBIDDEN, f"token refused: {error.message}") from None
        if not self.principal.same_identity(fresh):
            raise HubError(
                ErrorCode.FORBIDDEN,
                "a refreshed token must name the same sub, role, tenant, loc and groups",
            )
        self.principal = fresh
        self._watch_expiry()
        self.sender.reply(refreshed_frame(request.ref, fresh.exp))
        self._parts.metrics.token_refreshes.inc()

    async def _receipt(self, request: Receipt) -> None:
        """Answered once stored: receipts come at a few a second, each one round trip
        shared with every other publish and receipt of the node."""
        principal, room = self.principal, request.room
        key = RoomKey(principal.tenant_for(request.tenant), room)
        principal.check_subscribe(room)
        if self._receipts is None:
            self._receipts = TokenBucket(self._parts.settings.receipt_rate, RECEIPT_BURST)
        if self._receipts.take() > 0:
            self._parts.tally.dropped[Dropped.RATE_LIMITED] += 1
            raise HubError(ErrorCode.RATE_LIMITED, "too many receipts, slow down")
        stored = await self._parts.publisher.receipt_soon(
            principal.sub, principal.role.value, key, request.id, request.status, request.data
        )
        if not stored:
            raise HubError(ErrorCode.NOT_FOUND, f"no event {request.id} in the history of {room}")
        self.sender.reply(receipted_frame(request.ref, room, request.id))

    def _heartbeat(self, request: Heartbeat) -> None:
        """A device is alive whenever it beats; only its beats within the heartbeat rate
        are recorded and published, so one device cannot flood its tenant's `status`."""
        principal, present = self.principal, self._present
        principal.check_heartbeat()
        assert present is not None
        if self._beats is None:
            self._beats = TokenBucket(self._parts.settings.heartbeat_rate, HEARTBEAT_BURST)
        self._parts.heartbeats.beat(self.sender)
        validate(DeviceHeartbeat, {**request.data, "device": principal.sub})
        if self._beats.take() > 0:
            self._parts.tally.dropped[Dropped.RATE_LIMITED] += 1
            raise HubError(ErrorCode.RATE_LIMITED, "too many heartbeats, slow down")
        self._parts.presence.heartbeat(present, request.data)
