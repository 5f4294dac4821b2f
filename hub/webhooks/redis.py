"""Webhooks in Redis, for a cluster of nodes: any node registers, lists and retries; one node
at a time, the holder of the tenant's lease, reads the tenant's `status` stream through a
consumer group and delivers its messages (keys and scripts: `hub.webhooks.scripts`).

A lease lasts `lease` seconds and its holder renews it about every third of that; a node
that dies stops renewing, and another takes the tenant over once the lease expires: it
claims what the dead node read and did not keep, and loads the pending messages it kept.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from hub.envelope import ID_END
from hub.presence.scripts import NODES
from hub.redis.clients import RedisClient
from hub.redis.failures import FAILURES, unavailable
from hub.redis.scripts import ScriptCall, call_all, register
from hub.rooms import tag
from hub.webhooks import scripts
from hub.webhooks.model import Delivery, Endpoint, Message, first_delivery, message_of
from hub.webhooks.scripts import TENANTS, base, status_stream
from hub.webhooks.store import READ_BATCH, Held, Polled, Store

log = logging.getLogger("hub.webhooks")

LEASE_OF_NODE_TTL = 2 / 3
"""A tenant's lease lasts this share of HUB_NODE_TTL unless renewed (10 s by default): a
dead node's tenants wait about as long as its devices wait to be reported offline."""
LOAD_CHUNK = 1000
"""Delivery records a load fetches per command."""


class RedisStore(Store):
    """Webhooks kept in Redis; `run` names this node as a lease holder and stream reader."""

    def __init__(
        self,
        redis: RedisClient,
        run: str,
        max_pending: int,
        grace: float,
        lease: float,
    ) -> None:
        self._redis = redis
        self._run = run
        self._most = max_pending
        self._grace_ms = int(grace * 1000)
        self.lease = lease
        self._add = register(redis, scripts.ADD, False)
        self._remove = register(redis, scripts.REMOVE, False)
        self._retry = register(redis, scripts.RETRY, False)
        self._read = register(redis, scripts.READ, False)
        self._ingest = register(redis, scripts.INGEST, False)
        self._settle = register(redis, scripts.SETTLE, False)
        self._renew = register(redis, scripts.RENEW, False)
        self._release = register(redis, scripts.RELEASE, False)

    async def start(self) -> None:
        """Nothing to start: the streams are read at each poll."""

    async def stop(self) -> None:
        """Nothing to stop."""

    async def add(self, tenant: str, endpoint: Endpoint, sealed: str, most: int) -> bool:
        record = orjson.dumps({**endpoint.as_json(), "secret": sealed})
        args: list[Any] = [tenant, endpoint.id, record, most, status_stream(tenant)]
        with unavailable("webhook registration"):
            if not await self._add(keys=[tag(tenant)], args=args):
                return False
            try:
                await self._redis.sadd(TENANTS, tenant)
            except FAILURES:
                await self._remove(keys=[tag(tenant)], args=[*args[:2], args[4]])
                raise
        return True

    async def endpoints(self, tenant: str) -> list[Endpoint]:
        with unavailable("webhook endpoints"):
            return [endpoint for endpoint, _ in await self._endpoints(tenant)]

    async def _endpoints(self, tenant: str) -> list[tuple[Endpoint, str]]:
        listed = await self._redis.hgetall(base(tenant) + "e")
        records = [orjson.loads(record) for record in listed.values()]
        kept = [(Endpoint.of(record), str(record["secret"])) for record in records]
        return sorted(kept, key=lambda pair: (pair[0].created, pair[0].id))

    async def remove(self, tenant: str, endpoint_id: str) -> bool:
        args = [tenant, endpoint_id, status_stream(tenant)]
        with unavailable("webhook removal"):
            left = int(await self._remove(keys=[tag(tenant)], args=args))
            if left == 0:
                await self._forget(tenant)
        return left >= 0

    async def _forget(self, tenant: str) -> None:
        """Take a tenant without endpoints out of the set; a registration that raced in
        meanwhile puts it back (it adds its endpoint before the tenant)."""
        await self._redis.srem(TENANTS, tenant)
        if await self._redis.hlen(base(tenant) + "e"):
            await self._redis.sadd(TENANTS, tenant)

    async def deliveries(self, tenant: str, endpoint_id: str, limit: int) -> list[Delivery] | None:
        with unavailable("webhook deliveries"):
            return await self._deliveries(tenant, endpoint_id, limit)

    async def _deliveries(self, tenant: str, endpoint_id: str, limit: int) -> list[Delivery] | None:
        keys = base(tenant)
        last = max(limit, 1) - 1
        pipe = self._redis.pipeline(transaction=False)
        pipe.hexists(keys + "e", endpoint_id)
        pipe.zrevrange(keys + "q:" + endpoint_id, 0, last, withscores=True)
        pipe.zrevrange(keys + "f:" + endpoint_id, 0, last, withscores=True)
        exists, pending, finished = await pipe.execute()
        if not exists:
            return None
        newest = sorted([*pending, *finished], key=lambda pair: -pair[1])[: max(limit, 0)]
        if not newest:
            return []
        ids = [wid for wid, _ in newest]
        records = await self._redis.hmget(keys + "d:" + endpoint_id, ids)
        return [
            Delivery.of(record, int(seq))
            for (_, seq), record in zip(newest, records, strict=True)
            if record is not None
        ]

    async def retry(self, tenant: str, endpoint_id: str, webhook_id: str, now: int) -> bool:
        args: list[Any] = [tenant, endpoint_id, webhook_id, now]
        with unavailable("webhook retry"):
            return bool(await self._retry(keys=[tag(tenant)], args=args))

    async def share(self) -> tuple[list[str], int]:
        pipe = self._redis.pipeline(transaction=False)
        pipe.smembers(TENANTS)
        pipe.zcard(NODES)
        tenants, nodes = await pipe.execute()
        return sorted(tenant.decode() for tenant in tenants), int(nodes)

    async def acquire(self, tenants: list[str]) -> list[str]:
        if not tenants:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for tenant in tenants:
            pipe.set(base(tenant) + "lease", self._run, nx=True, px=int(self.lease * 1000))
        taken = await pipe.execute(raise_on_error=False)
        return [tenant for tenant, ok in zip(tenants, taken, strict=True) if ok is True]

    async def renew(self, tenants: list[str]) -> list[str]:
        ttl = int(self.lease * 1000)
        calls = [
            ScriptCall(self._renew, tag(tenant), [base(tenant) + "lease", self._run, ttl])
            for tenant in tenants
        ]
        replies = await call_all(self._redis, calls) if calls else []
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return [tenant for tenant, held in zip(tenants, replies, strict=True) if held == 1]

    async def release(self, tenants: list[str]) -> None:
        calls = [
            ScriptCall(self._release, tag(tenant), [base(tenant) + "lease", self._run])
            for tenant in tenants
        ]
        if calls:
            await call_all(self._redis, calls)

    async def load(self, tenant: str) -> Held:
        endpoints = await self._endpoints(tenant)
        keys = base(tenant)
        pipe = self._redis.pipeline(transaction=False)
        for endpoint, _ in endpoints:
            pipe.zrange(keys + "q:" + endpoint.id, 0, -1, withscores=True)
        queues: list[list[tuple[bytes, float]]] = await pipe.execute() if endpoints else []
        pending: dict[str, list[Delivery]] = {}
        for (endpoint, _), queue in zip(endpoints, queues, strict=True):
            pending[endpoint.id] = await self._records(keys + "d:" + endpoint.id, queue)
        return Held(endpoints, pending)

    async def _records(self, key: str, queue: list[tuple[bytes, float]]) -> list[Delivery]:
        found: list[Delivery] = []
        for start in range(0, len(queue), LOAD_CHUNK):
            chunk = queue[start : start + LOAD_CHUNK]
            records = await self._redis.hmget(key, [wid for wid, _ in chunk])
            found.extend(
                Delivery.of(record, int(seq))
                for (_, seq), record in zip(chunk, records, strict=True)
                if record is not None
            )
        return found

    async def poll(self, tenants: list[str], now: int) -> dict[str, Polled]:
        reads = [
            ScriptCall(
                self._read, tag(tenant), [tenant, self._run, status_stream(tenant), READ_BATCH]
            )
            for tenant in tenants
        ]
        replies = await call_all(self._redis, reads) if reads else []
        polled: dict[str, Polled] = {}
        work: list[tuple[str, list[bytes], dict[str, Message]]] = []
        for tenant, reply in zip(tenants, replies, strict=True):
            if isinstance(reply, Exception):
                log.warning("reading the status events of tenant %s failed: %s", tenant, reply)
                continue
            code = int(reply[0])
            if code != 1:
                polled[tenant] = Polled(held=False)
                if code == 2:
                    await self._forget(tenant)
                continue
            polled[tenant] = Polled(reload=bool(int(reply[1])))
            entries, messages = _messages(tenant, reply[2])
            if entries:
                work.append((tenant, entries, messages))
        if work:
            await self._take(work, polled, now)
        return polled

    async def _take(
        self,
        work: list[tuple[str, list[bytes], dict[str, Message]]],
        polled: dict[str, Polled],
        now: int,
    ) -> None:
        """Keep the messages read and acknowledge their entries, one script per tenant."""
        calls = []
        for tenant, entries, messages in work:
            args: list[Any] = [tenant, self._run, status_stream(tenant), self._most]
            args += [self._grace_ms, len(entries), *entries]
            for message in messages.values():
                first = first_delivery(message, now, self._grace_ms, 0)
                args += [message.id, message.type, message.device, message.time]
                args += [first.record(), message.body]
            calls.append(ScriptCall(self._ingest, tag(tenant), args))
        replies = await call_all(self._redis, calls)
        for (tenant, _, messages), reply in zip(work, replies, strict=True):
            changed = polled[tenant]
            if isinstance(reply, Exception):
                log.warning("keeping the webhook messages of tenant %s failed: %s", tenant, reply)
                changed.reload = True
            elif int(reply[0]) != 1:
                polled[tenant] = Polled(held=False)
            else:
                added, dropped, failed = reply[1], reply[2], reply[3]
                for at in range(0, len(added), 3):
                    message = messages[added[at + 1].decode()]
                    first = first_delivery(message, now, self._grace_ms, int(added[at + 2]))
                    changed.added.append((added[at].decode(), first))
                changed.dropped.extend(_pairs(dropped))
                changed.failed.extend(_pairs(failed))

    async def body(self, tenant: str, endpoint_id: str, webhook_id: str) -> bytes | None:
        found = await self._redis.hget(base(tenant) + "b:" + endpoint_id, webhook_id)
        return found.encode() if isinstance(found, str) else found

    async def settle(self, tenant: str, endpoint_id: str, delivery: Delivery) -> None:
        args: list[Any] = [tenant, endpoint_id, delivery.id, delivery.record()]
        args.append(delivery.state.value)
        await self._settle(keys=[tag(tenant)], args=args)


def _messages(tenant: str, entries: list[bytes]) -> tuple[list[bytes], dict[str, Message]]:
    """The ids of the stream entries read (each followed by its `p`, or nothing), and the
    messages they make, by webhook id."""
    ids: list[bytes] = entries[::2]
    messages: dict[str, Message] = {}
    for entry_id, prefix in zip(ids, entries[1::2], strict=True):
        if prefix:
            message = message_of(tenant, entry_id.decode(), prefix + entry_id + ID_END)
            if message is not None:
                messages[message.id] = message
    return ids, messages


def _pairs(flat: list[bytes]) -> list[tuple[str, str]]:
    return [(flat[at].decode(), flat[at + 1].decode()) for at in range(0, len(flat), 2)]
