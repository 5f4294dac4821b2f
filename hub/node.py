"""A node: local rooms joined to the broker. The only place the two meet."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hub.broker import Broker
from hub.config import Settings
from hub.metrics import Metrics
from hub.protocol import ErrorCode, HubError, Ref, event_frame
from hub.rooms import Member, Rooms, room_key


@dataclass(frozen=True, slots=True)
class Published:
    ids: dict[str, str | None]
    ts: int


class Node:
    def __init__(self, settings: Settings, broker: Broker, metrics: Metrics) -> None:
        self.settings = settings
        self.id = settings.node_id
        self.broker = broker
        self.metrics = metrics
        self.rooms = Rooms()
        self._subscribing: dict[str, asyncio.Future[None]] = {}
        self._conn_ids = itertools.count(1)

    async def start(self) -> None:
        await self.broker.connect(self._deliver)

    async def stop(self) -> None:
        await self.broker.disconnect()

    def next_conn_id(self) -> str:
        return f"{self.id}.{next(self._conn_ids)}"

    def _deliver(self, key: str, payload: bytes) -> None:
        self.metrics.messages_out.inc(self.rooms.fan_out(key, payload))

    async def join(self, key: str, member: Member) -> None:
        """Add `member` to a room; return once the room's events reach this node.

        The first local member subscribes the node through the broker; members arriving
        meanwhile wait for that same subscription. On `BrokerUnavailable` the member is
        taken out again and the error propagates.
        """
        if self.rooms.add(key, member):
            self.metrics.rooms.set(len(self.rooms))
            pending = asyncio.get_running_loop().create_future()
            self._subscribing[key] = pending
            try:
                await self.broker.subscribe(key)
            except Exception as error:
                pending.set_exception(error)
                pending.exception()
                await self.leave(key, member)
                raise
            else:
                pending.set_result(None)
            finally:
                del self._subscribing[key]
            return
        waiting = self._subscribing.get(key)
        if waiting is not None:
            try:
                await waiting
            except Exception:
                await self.leave(key, member)
                raise

    async def leave(self, key: str, member: Member) -> None:
        if self.rooms.remove(key, member):
            self.metrics.rooms.set(len(self.rooms))
            await self.broker.unsubscribe(key)

    async def publish(
        self, tenant: str, rooms: Sequence[str], event: str, data: Any, ref: Ref = None
    ) -> Published:
        """Encode the event once per room and publish to every room, or to none."""
        ts = int(time.time() * 1000)
        limit = self.settings.max_event_bytes
        messages = []
        for room in rooms:
            payload = event_frame(room, event, data, ts, None)
            if len(payload) > limit:
                raise HubError(
                    ErrorCode.TOO_LARGE, f"event is {len(payload)} bytes, limit {limit}", ref
                )
            messages.append((room_key(tenant, room), payload))
        await self.broker.publish(messages)
        self.metrics.messages_in.inc(len(messages))
        return Published(ids=dict.fromkeys(rooms), ts=ts)
