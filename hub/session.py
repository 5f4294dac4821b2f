"""One socket's session: its welcome, its rooms, and its frames read one at a time and
answered (`hub.answers`) until it goes.

The session decides; its `Sender` writes; its `Wire` carries the bytes, however they
travel.
"""

from __future__ import annotations

import logging

from hub.answers import Answers
from hub.auth import Principal, Role
from hub.broker import BrokerUnavailable
from hub.config import Keepalive
from hub.disconnect import (
    BINARY_FRAME,
    BROKER_UNAVAILABLE,
    INTERNAL_ERROR,
    PEER_CLOSED,
    RATE_LIMITED,
)
from hub.errors import ErrorCode, HubError
from hub.presence import Present
from hub.protocol import parse_request, ref_of, welcome_frame
from hub.ratelimit import FrameLimit, Verdict
from hub.rooms import RoomKey
from hub.sender import Sender
from hub.session_parts import SessionParts
from hub.stats import Dropped
from hub.wire import Wire

log = logging.getLogger("hub")

TOO_MANY_FRAMES = HubError(ErrorCode.RATE_LIMITED, "too many frames, slow down")
"""Answered as it is, never raised (see `hub.answers.FAILED`)."""


class Session(Answers):
    """Runs one socket's session: welcome, then one answer per frame, until it goes."""

    __slots__ = ("_limit", "_wire")

    def __init__(self, parts: SessionParts, principal: Principal, wire: Wire) -> None:
        settings = parts.settings
        sender = Sender(wire, settings.send_queue_bytes, parts.tally, parts.metrics.slow_consumers)
        super().__init__(parts, principal, sender)
        self._wire = wire
        self._limit = (
            FrameLimit(settings.client_rate, settings.client_burst)
            if settings.client_rate > 0
            else None
        )
        wire.peer = self  # no bound method kept per socket

    def buffered(self) -> int:
        return self.sender.buffered()

    async def run(self) -> None:
        """Welcome, auto-join, then answer frames until the socket goes."""
        parts, principal, sender = self._parts, self.principal, self.sender
        read = self._wire.read
        self._watch_expiry()
        device = principal.role is Role.DEVICE
        keepalive = parts.settings.keepalive(principal.heartbeat)
        if device:
            parts.heartbeats.watch(sender, keepalive.timeout)
            if principal.heartbeat is not None:
                self._wire.keepalive(keepalive.ping)
        try:
            await self._open(keepalive)
            while True:
                message = await read()
                if message is None:
                    return
                if not isinstance(message, str):
                    self.close(BINARY_FRAME)
                    return
                await self._handle(message)
        except BrokerUnavailable:
            self.close(BROKER_UNAVAILABLE)
            raise
        except Exception:
            self.close(INTERNAL_ERROR)
            raise
        finally:
            await self._gone(device)

    async def _gone(self, device: bool) -> None:
        """The socket is closed: out of the heartbeat watch, presence and its rooms."""
        parts, sender = self._parts, self.sender
        self._forget_expiry()
        if device:
            parts.heartbeats.forget(sender)
        sender.stop()
        cause = sender.cause or PEER_CLOSED
        if self._present is not None:
            parts.presence.disconnect(self._present, cause.gone)
        if parts.tracer.on:
            parts.tracer.closed(self.log_fields, cause)
        for key in list(self._rooms):
            await parts.node.leave(key, sender)
        self._rooms.clear()

    async def _open(self, keepalive: Keepalive) -> None:
        """Join the device's rooms and enter presence before the welcome goes out, holding
        events meanwhile; the welcome tells the device its `keepalive`.

        So the welcome means what a subscribe ack means: every event accepted after it
        is delivered; and every node knows the socket.
        """
        parts, principal = self._parts, self.principal
        tenant = principal.tenant
        joined: list[str] = []
        if tenant is not None:
            for room in principal.auto_rooms:
                key = RoomKey(tenant, room)
                self._rooms.add(key)
                try:
                    await parts.node.join(key, self.sender)
                except BaseException:
                    self._rooms.discard(key)
                    raise
                joined.append(room)
        self._present = Present(
            self.id, principal.sub, principal.role, tenant, principal.loc, principal.groups
        )
        await parts.presence.connect(self._present, self._rooms)
        # Read once every room is joined: a state event published after the read is held
        # for the socket, and delivered after the welcome.
        keys = list(self._rooms)
        states = await parts.node.states(keys) if keys else []
        state = {key.room: events for key, events in zip(keys, states, strict=True)}
        settings = parts.settings
        heartbeat = {"interval": keepalive.interval, "timeout": keepalive.timeout}
        limits = {"rate": settings.client_rate, "burst": settings.client_burst}
        self.sender.open(
            welcome_frame(
                self.id,
                parts.node_id,
                principal.role,
                principal.sub,
                tenant,
                joined,
                heartbeat,
                limits,
                state,
                self._wire.hello,
            )
        )

    async def _handle(self, text: str) -> None:
        if self._limit is not None and (verdict := self._limit.admit()) is not Verdict.ADMIT:
            self._parts.tally.dropped[Dropped.RATE_LIMITED] += 1
            if verdict is Verdict.CLOSE:
                self.close(RATE_LIMITED)
            self._refuse(TOO_MANY_FRAMES, ref_of(text))
            return
        try:
            request = parse_request(text)
        except HubError as error:
            self._refuse(error, error.ref)
            return
        try:
            await self._dispatch(request)
        except HubError as error:
            self._refuse(error, request.ref)

    def pinged(self, pong: bytes) -> None:
        """A WebSocket ping is a frame like any other for the rate limit, and its pong is
        answered only within the send queue: a ping past either goes unanswered."""
        limit = self._limit
        if limit is not None and (verdict := limit.admit()) is not Verdict.ADMIT:
            self._parts.tally.dropped[Dropped.RATE_LIMITED] += 1
            if verdict is Verdict.CLOSE:
                self.close(RATE_LIMITED)
            return
        self.sender.pong(pong)
