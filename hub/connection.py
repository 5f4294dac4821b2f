"""One socket's session: its principal, its subscriptions, its frames in and out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from hub.auth import Principal, Role
from hub.broker import BrokerUnavailable
from hub.events import DeviceHeartbeat, check_event, validate
from hub.node import Node, Published
from hub.presence import Gone, Present
from hub.protocol import (
    PROTOCOL_VERSION,
    Close,
    ErrorCode,
    HubError,
    Op,
    Ref,
    Request,
    encode,
    error_frame,
    parse_request,
    pong_frame,
    websocket_text_frame,
)
from hub.ratelimit import TokenBucket
from hub.rooms import room_key
from hub.transport import PING_TIMEOUT_REASON, FrameWriter

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

MAX_PUBLISHING = 64
"""Publishes one socket may have in flight."""

GONE_BY_CLOSE: dict[int, Gone] = {
    Close.HEARTBEAT_TIMEOUT: Gone.HEARTBEAT_TIMEOUT,
    Close.SLOW_CONSUMER: Gone.SLOW_CONSUMER,
    Close.RATE_LIMITED: Gone.RATE_LIMITED,
    Close.POLICY: Gone.TOKEN_EXPIRED,
    Close.UNSUPPORTED_DATA: Gone.POLICY,
    Close.RESTART: Gone.NODE_RESTART,
    Close.INTERNAL: Gone.ERROR,
}
"""The `device.offline` reason for a socket the hub closed with a code."""


class Connection:
    """Sends never wait: a socket with more than `send_queue_bytes` waiting for the kernel
    is closed with 4009."""

    __slots__ = (
        "_bucket",
        "_closing",
        "_expiry",
        "_gone",
        "_held",
        "_limit",
        "_node",
        "_present",
        "_publishing",
        "_strikes",
        "_subscriptions",
        "_writer",
        "id",
        "principal",
    )

    def __init__(self, node: Node, principal: Principal, writer: FrameWriter) -> None:
        settings = node.settings
        self._node = node
        self._writer = writer
        self._limit = settings.send_queue_bytes
        self._closing = False
        self._held: list[bytes] | None = []
        self._subscriptions: dict[str, str] = {}
        self._bucket = (
            TokenBucket(settings.client_rate, settings.client_burst)
            if settings.client_rate > 0
            else None
        )
        self._strikes = 0
        self._expiry: asyncio.TimerHandle | None = None
        self._gone = Gone.CLOSED
        self._present: Present | None = None
        self._publishing = 0
        self.id = node.next_conn_id()
        self.principal = principal

    def send(self, frame: bytes) -> None:
        """The hot path: called once per event per local subscriber."""
        if self._closing:
            if self._gone is Gone.SLOW_CONSUMER:
                self._node.tally.dropped[Gone.SLOW_CONSUMER.value] += 1
            return
        if self._held is not None:
            self._held.append(frame)
            return
        if self._writer.write(frame) > self._limit:
            self._shed()

    def deliver(self, joined: bytes, frames: Sequence[bytes]) -> None:
        self.send(joined)

    def buffered(self) -> int:
        """Bytes written to the socket and not yet taken by the kernel."""
        return self._writer.buffered()

    def _reply(self, payload: bytes) -> None:
        self.send(websocket_text_frame(payload))

    def _shed(self) -> None:
        self._closing = True
        self._gone = Gone.SLOW_CONSUMER
        self._node.metrics.slow_consumers.inc()
        asyncio.get_running_loop().call_soon(
            self._writer.close, Close.SLOW_CONSUMER, "slow consumer"
        )

    def close(self, code: int, reason: str) -> None:
        if not self._closing:
            self._closing = True
            self._gone = GONE_BY_CLOSE.get(code, Gone.CLOSED)
            self._writer.close(code, reason)

    async def run(self, receive: Receive) -> None:
        """Welcome, auto-join, then answer frames until the socket goes."""
        principal = self.principal
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_at(
            loop.time() + max(0.0, principal.exp - time.time()),
            self.close,
            Close.POLICY,
            "token expired",
        )
        device = principal.role is Role.DEVICE
        if device:
            self._node.heartbeats.beat(self)
        try:
            await self._open()
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    self._disconnected(message)
                    return
                text = message.get("text")
                if text is None:
                    self.close(Close.UNSUPPORTED_DATA, "binary frames are not accepted")
                    return
                await self._handle(text)
        except Exception:
            self.close(Close.INTERNAL, "internal error")
            raise
        finally:
            self._expiry.cancel()
            if device:
                self._node.heartbeats.forget(self)
            self._closing = True
            if self._present is not None:
                self._node.presence.disconnect(self._present, self._gone)
            for key in list(self._subscriptions):
                await self._node.leave(key, self)
            self._subscriptions.clear()

    def _disconnected(self, message: MutableMapping[str, Any]) -> None:
        """Note why the socket went, unless the hub itself closed it."""
        if self._closing:
            return
        if message.get("code") == Close.RESTART:
            self._gone = Gone.NODE_RESTART
        elif message.get("reason") == PING_TIMEOUT_REASON:
            self._gone = Gone.PING_TIMEOUT

    async def _open(self) -> None:
        """Join the device's rooms and enter presence before the welcome goes out, holding
        events meanwhile.

        So the welcome means what a subscribe ack means: every event accepted after it
        is delivered; and every node knows the socket.
        """
        node, principal = self._node, self.principal
        tenant = principal.tenant
        joined: list[str] = []
        if tenant is not None and principal.auto_rooms:
            try:
                for room in principal.auto_rooms:
                    await self._join(tenant, room)
                    joined.append(room)
            except BrokerUnavailable:
                self.close(Close.TRY_AGAIN, "broker unavailable")
                raise
        self._present = Present(self.id, principal.sub, principal.role, tenant, principal.loc)
        await node.presence.connect(self._present, self._subscriptions)
        held, self._held = self._held, None
        settings = node.settings
        self._reply(
            encode(
                {
                    "type": "welcome",
                    "v": PROTOCOL_VERSION,
                    "conn": self.id,
                    "node": node.id,
                    "role": principal.role,
                    "sub": principal.sub,
                    "tenant": tenant,
                    "rooms": joined,
                    "heartbeat": {
                        "interval": settings.heartbeat_interval,
                        "timeout": settings.heartbeat_timeout,
                    },
                }
            )
        )
        for frame in held or ():
            self.send(frame)

    async def _join(self, tenant: str, room: str) -> None:
        key = room_key(tenant, room)
        if key in self._subscriptions:
            return
        self._subscriptions[key] = room
        try:
            await self._node.join(key, self)
        except BrokerUnavailable:
            del self._subscriptions[key]
            raise

    async def _handle(self, text: str) -> None:
        ref: Ref = None
        try:
            self._admit(text)
            request = parse_request(text)
            ref = request.ref
            if request.op is Op.PING:
                self._reply(pong_frame(ref))
            elif request.op is Op.SUBSCRIBE:
                await self._subscribe(request)
            elif request.op is Op.UNSUBSCRIBE:
                await self._unsubscribe(request)
            elif request.op is Op.PUBLISH:
                await self._publish(request)
            else:
                self._heartbeat(request)
        except HubError as error:
            self._reply(error_frame(error.code, error.message, error.ref))
        except BrokerUnavailable:
            self._reply(error_frame(ErrorCode.UNAVAILABLE, "broker unavailable, retry", ref))

    def _admit(self, text: str) -> None:
        """Rate-limit frames: refuse with `rate_limited`, close with 4029 on a flood."""
        if self._bucket is None or self._bucket.take() == 0.0:
            self._strikes = 0
            return
        self._strikes += 1
        self._node.tally.dropped[Gone.RATE_LIMITED.value] += 1
        if self._strikes > self._node.settings.client_burst:
            self.close(Close.RATE_LIMITED, "rate limited")
        try:
            ref = parse_request(text).ref
        except HubError as error:
            ref = error.ref
        raise HubError(ErrorCode.RATE_LIMITED, "too many frames, slow down", ref)

    def _tenant(self, request: Request) -> str:
        principal = self.principal
        if request.tenant is not None and request.tenant != principal.tenant:
            if principal.role is not Role.ADMIN:
                raise HubError(ErrorCode.FORBIDDEN, "only admins may name a tenant", request.ref)
            return request.tenant
        if principal.tenant is None:
            raise HubError(ErrorCode.BAD_REQUEST, "tenant is required for admins", request.ref)
        return principal.tenant

    async def _subscribe(self, request: Request) -> None:
        room = request.room
        assert room is not None
        tenant = self._tenant(request)
        if not self.principal.may_subscribe(room):
            raise HubError(ErrorCode.FORBIDDEN, f"not allowed to subscribe to {room}", request.ref)
        key = room_key(tenant, room)
        known = key in self._subscriptions
        self._subscriptions[key] = room
        try:
            result = await self._node.subscribe(key, self, request.since, request.epoch)
        except BrokerUnavailable:
            if not known:
                del self._subscriptions[key]
            raise
        for frame in result.frames:
            self.send(frame)
        if self._present is not None:
            self._node.presence.join(self._present, key)
        self._reply(
            encode(
                {
                    "type": "ack",
                    "ref": request.ref,
                    "room": room,
                    "recovered": result.recovered,
                    "epoch": result.epoch,
                    "last": result.last,
                }
            )
        )

    async def _unsubscribe(self, request: Request) -> None:
        room = request.room
        assert room is not None
        key = room_key(self._tenant(request), room)
        if self._subscriptions.pop(key, None) is not None:
            await self._node.leave(key, self)
            if self._present is not None:
                self._node.presence.leave(self._present, key)
        self._reply(encode({"type": "ack", "ref": request.ref, "room": room}))

    async def _publish(self, request: Request) -> None:
        """Hand the event to the broker and go on reading: the ack follows when it is
        published, so a socket may have several publishes in flight (in order), up to
        `MAX_PUBLISHING`; past that it waits, and stops reading, until one completes."""
        room, event = request.room, request.event
        assert room is not None
        assert event is not None
        tenant = self._tenant(request)
        if not self.principal.may_publish(room):
            raise HubError(ErrorCode.FORBIDDEN, f"not allowed to publish to {room}", request.ref)
        check_event(event, request.data, request.ref)
        published = self._node.publish_soon(tenant, [room], event, request.data, request.ref)
        self._publishing += 1
        published.add_done_callback(lambda done: self._acknowledge(done, room, request.ref))
        if self._publishing > MAX_PUBLISHING:
            await asyncio.wait([published])

    def _acknowledge(self, published: asyncio.Future[Published], room: str, ref: Ref) -> None:
        self._publishing -= 1
        error = published.exception()
        if isinstance(error, HubError):
            self._reply(error_frame(error.code, error.message, ref))
        elif isinstance(error, BrokerUnavailable):
            self._reply(error_frame(ErrorCode.UNAVAILABLE, "broker unavailable, retry", ref))
        elif error is not None:
            raise error
        else:
            done = published.result()
            self._reply(encode({"type": "ack", "ref": ref, "id": done.ids[room], "ts": done.ts}))

    def _heartbeat(self, request: Request) -> None:
        present = self._present
        if present is None or present.device is None:
            raise HubError(ErrorCode.FORBIDDEN, "only devices send heartbeats", request.ref)
        validate(DeviceHeartbeat, {**request.data, "device": present.sub}, request.ref)
        self._node.heartbeats.beat(self)
        self._node.presence.heartbeat(present, request.data)
