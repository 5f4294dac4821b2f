"""Presence read from Redis for clients: a page of a room's members with their devices'
heartbeats, and a page of a tenant's fleet, both over the node's read connections
(`Clients.reads`)."""

from __future__ import annotations

import asyncio

import orjson

from hub.broker.scripts import ROOM_PREFIX
from hub.fleet import SCAN_BUDGET, Device, FleetPage, FleetQuery
from hub.presence.base import MemberRecord, Place, first_members
from hub.presence.scripts import FLEET_PAGE, heartbeats_key
from hub.redis.clients import RedisClient
from hub.redis.failures import unavailable
from hub.rooms import RoomKey, tag

PARSE_CHUNK = 5000
"""Members of a room parsed in one turn of the event loop (a few ms) when it is listed."""


class Reads:
    """The room and fleet listings, read from what every node wrote."""

    def __init__(self, reader: RedisClient, fleet_ttl_ms: int) -> None:
        self._reader = reader
        self._fleet_ttl_ms = fleet_ttl_ms
        self._fleet_page = reader.register_script(FLEET_PAGE)

    async def members(
        self, key: RoomKey, after: Place | None, count: int | None
    ) -> list[MemberRecord]:
        """The room's hash is read whole (it is in no order), and parsed `PARSE_CHUNK`
        members at a time between turns of the event loop, keeping only the first `count`."""
        with unavailable("redis presence read failed"):
            raw = await self._reader.hvals(ROOM_PREFIX + key.name)
            keep = len(raw) if count is None else count
            chosen: list[MemberRecord] = []
            for at in range(0, len(raw), PARSE_CHUNK):
                if at:
                    await asyncio.sleep(0)
                parsed = map(orjson.loads, raw[at : at + PARSE_CHUNK])
                chosen = first_members([*chosen, *parsed], after, keep)
            devices = [entry for entry in chosen if entry["role"] == "device"]
            beats = []
            if devices:
                beats = await self._reader.hmget(
                    heartbeats_key(key.tenant), [entry["sub"] for entry in devices]
                )
        for entry in chosen:
            entry["heartbeat"] = None
        for entry, beat in zip(devices, beats, strict=True):
            entry["heartbeat"] = orjson.loads(beat) if beat else None
        return chosen

    async def devices(self, tenant: str, query: FleetQuery) -> FleetPage:
        online = "" if query.online is None else str(query.online).lower()
        args: list[str | int] = [tenant, query.after or "", query.limit, SCAN_BUDGET]
        args += [self._fleet_ttl_ms, query.loc or "", query.group or "", online]
        with unavailable("redis fleet read failed"):
            after, *found = await self._fleet_page(keys=[tag(tenant)], args=args)
        devices = [_device(*found[at : at + 4]) for at in range(0, len(found), 4)]
        return FleetPage(devices, None if after is None else after.decode())


def _device(sub: bytes, record: bytes, heartbeat: bytes | None, seen: bytes) -> Device:
    return {
        "sub": sub.decode(),
        **orjson.loads(record),
        "last_seen": int(float(seen)),
        "heartbeat": None if heartbeat is None else orjson.loads(heartbeat),
    }
