"""Lua scripts that keep presence in Redis and publish the lifecycle events it implies.

Keys (`<instance>` is one registration of one node process, `<pkey>` one socket of it,
`{t}` a tenant's hash tag):

| key | type | holds |
|---|---|---|
| `hub:{hub}:nodes` | sorted set | live instances, scored by when (ms, Redis clock) they expire |
| `hub:{hub}:reaping` | hash | instances dead or retired, still being cleaned up, to the reason |
| `hub:{hub}:draining` | set | live instances whose drain left devices a window to reconnect |
| `hub:{hub}:it:<instance>` | set | the tenants the instance has written sockets in |
| `hub:{hub}:stats` | hash | instance to its node's latest figures (JSON) |
| `hub:pn:{t}:<instance>` | hash | pkey to the socket's record (below) |
| `hub:ps:{t}:<instance>:<pkey>` | set | the socket's room keys: joining, leaving cost O(1) |
| `hub:pr:{t}:<room>` | hash | pkey to the member entry the presence endpoint lists |
| `hub:pd:{t}:<sub>` | set | a device's sockets across the cluster: online while not empty |
| `hub:dn:{t}` | sorted set | instances declared dead in the tenant, by when (kept a day) |
| `hub:lv:{t}:<instance>` | sorted set | devices a drain of the instance closed, by offline time |
| `hub:lvr:{t}` | hash | such a device to `[its record's o, the reason, its f, its k, instance]` |
| `hub:hb:{t}` | hash | sub to the device's last heartbeat, kept while the fleet is |
| `hub:fd:{t}` | hash | sub to the device's fleet record (JSON, below) |
| `hub:fs:{t}` | sorted set | sub, scored by when (ms, Redis clock) the device was last seen |
| `hub:fx:{t}` | sorted set | sub, every score 0: the fleet in sub order, for paging |

Every script touches one slot: the registry's (`{hub}`) or one tenant's, which is what
lets presence live on a Redis Cluster. What decides a device online or offline (its
sockets, its leaver entry, the fleet, the `status` room) is all in its tenant's slot, so
each such decision is one atomic script: online/offline is exactly-once across nodes.

A node's instance is live while it refreshes `hub:{hub}:nodes`. Before each batch of
writes a node enrols the tenants it is about to write in (`ENROL`, which fails once the
instance is no longer live), so the registry always knows where an instance's sockets
are. A batch of heartbeats alone, the steady state, skips it: a heartbeat is written only
for a socket the tenant holds, of an instance not declared dead in the tenant, so it
cannot bring back a socket a reaper or a lost Redis took away.
Reaping a dead instance is then one registry step (`REAP_NODES`: declare the expired
dead, list the work) and one step per tenant (`TENANT_REAP`): it first marks the instance
dead in the tenant, so nothing the instance still sends can bring its sockets back there,
then cleans up its sockets, reporting devices offline as their last socket goes.

A device in the leaver hash that reconnects anywhere before its time is simply taken out:
it never went offline (and stays online in the fleet). The others are reported offline
by the reaper once their time has passed.

A socket's record is JSON: `t` its tenant, `s` its sub and, for a device, `o` its
`device.offline` event cut just before the reason (`envelope.head`), `f` its fleet record
cut after `loc` and `groups` (`{"loc":…,"groups":[…]`, finished by whoever reports it
offline, perhaps after its node died) and `k` how long (ms) its tenant's fleet keys are
kept after a write.

The fleet (`hub.fleet`): a device's record in `fd` is its `Device` without `sub`,
`last_seen` and `heartbeat` (which `fx`, `fs` and `hb` hold). The record is written only
in the steps that publish `device.online` and `device.offline`, so it never disagrees with
them; `fs` also at every connect and heartbeat. An offline device last seen more than the
fleet TTL ago is forgotten, every entry of it: `CONNECT` forgets a few each time, and reads
skip them. Every write pushes the expiry of the tenant's four keys back to the fleet keep
(`registry.fleet_keep`: the TTL, plus the longest an online device goes without a write), so
a tenant gone quiet disappears whole.

Every script called for a socket takes the same first arguments: the epoch for a room
history that has none, the instance, the `status` room's history size and TTL (ms), the
fleet TTL and keep (ms), the tenant, then the socket's pkey (for `HEARTBEATS`, one group
of arguments per heartbeat). Its one key is the tenant's tag, for routing.
"""

from __future__ import annotations

from hub.broker.scripts import LIBRARY, ROOM_PREFIX
from hub.fleet import FORGET_BATCH
from hub.redis.clients import RedisClient
from hub.redis.scripts import load, register
from hub.rooms import tag

REGISTRY = "{hub}"
"""The registry's hash tag: every registry key is in its slot, and its scripts' one key."""
NODES = f"hub:{REGISTRY}:nodes"
REAPING = f"hub:{REGISTRY}:reaping"
DRAINING = f"hub:{REGISTRY}:draining"
TENANTS_PREFIX = f"hub:{REGISTRY}:it:"
STATS = f"hub:{REGISTRY}:stats"
HEARTBEAT_PREFIX = "hub:hb:"
FLEET_PREFIX = "hub:fd:"
SEEN_PREFIX = "hub:fs:"
INDEX_PREFIX = "hub:fx:"
FLEET_CHUNK = 256
"""Fleet entries a read fetches per step."""
DEAD_KEEP_MS = 86_400_000
"""How long a tenant remembers an instance declared dead: far longer than any write of
it can be on its way (each batch is preceded by a check that the instance is live)."""
NO_TENANT = "*"
"""What stands for the tenant of a socket without one (an admin's) in its keys."""


def heartbeats_key(tenant: str) -> str:
    return HEARTBEAT_PREFIX + tag(tenant)


PRESENCE_LIBRARY = (
    LIBRARY
    + f"""
local NODES, REAPING, DRAINING, STATS = '{NODES}', '{REAPING}', '{DRAINING}', '{STATS}'
local TENANTS = '{TENANTS_PREFIX}'
local SOCKETS, SOCKET_ROOMS = 'hub:pn:', 'hub:ps:'
local ROOM, BEATS = '{ROOM_PREFIX}', '{HEARTBEAT_PREFIX}'
local DEVICES, DEAD, LEAVING, LEAVERS = 'hub:pd:', 'hub:dn:', 'hub:lv:', 'hub:lvr:'
local FLEET, SEEN, INDEX = '{FLEET_PREFIX}', '{SEEN_PREFIX}', '{INDEX_PREFIX}'

local function sockets_of(tenant, instance)
  return SOCKETS .. tag(tenant) .. ':' .. instance
end
local function rooms_of(tenant, instance, pkey)
  return SOCKET_ROOMS .. tag(tenant) .. ':' .. instance .. ':' .. pkey
end
local function devices_of(tenant, sub)
  return DEVICES .. tag(tenant) .. ':' .. sub
end
local function leaving_of(tenant, instance)
  return LEAVING .. tag(tenant) .. ':' .. instance
end

local function alive(instance)
  return redis.call('ZSCORE', NODES, instance)
end

-- Whether `instance` may still write in `tenant`: it was not declared dead there.
local function alive_in(tenant, instance)
  return not redis.call('ZSCORE', DEAD .. tag(tenant), instance)
end

-- Take one socket out of presence; returns its record when it was its device's last.
local function drop(tenant, instance, pkey)
  local sockets = sockets_of(tenant, instance)
  local raw = redis.call('HGET', sockets, pkey)
  if not raw then return nil end
  redis.call('HDEL', sockets, pkey)
  local record = cjson.decode(raw)
  local rooms = rooms_of(tenant, instance, pkey)
  for _, key in ipairs(redis.call('SMEMBERS', rooms)) do redis.call('HDEL', ROOM .. key, pkey) end
  redis.call('DEL', rooms)
  if not record.o then return nil end
  local devices = devices_of(tenant, record.s)
  redis.call('SREM', devices, pkey)
  if redis.call('SCARD', devices) > 0 then return nil end
  return record
end

-- Push back the expiry of `tenant`'s fleet keys to `keep_ms` from now.
local function keep_fleet(tenant, keep_ms)
  for _, prefix in ipairs({{FLEET, SEEN, INDEX, BEATS}}) do
    redis.call('PEXPIRE', prefix .. tag(tenant), ms(keep_ms))
  end
end

-- `tenant`'s device `sub` was seen at `now`.
local function seen_fleet(tenant, sub, now, keep_ms)
  redis.call('ZADD', SEEN .. tag(tenant), ms(now), sub)
  keep_fleet(tenant, keep_ms)
end

-- The fleet record (JSON) of `tenant`'s device `sub`, as it went online or offline.
local function record_fleet(tenant, sub, record)
  redis.call('HSET', FLEET .. tag(tenant), sub, record)
  redis.call('ZADD', INDEX .. tag(tenant), 0, sub)
end

-- Forget up to {FORGET_BATCH} of `tenant`'s offline devices last seen more than `ttl_ms`
-- before `now`; an online one among them is seen now instead.
local function forget_fleet(tenant, ttl_ms, now)
  local records, seen = FLEET .. tag(tenant), SEEN .. tag(tenant)
  local old = redis.call('ZRANGEBYSCORE', seen, '-inf', '(' .. ms(now - ttl_ms),
    'LIMIT', 0, {FORGET_BATCH})
  for _, sub in ipairs(old) do
    local record = redis.call('HGET', records, sub)
    if record and cjson.decode(record).online then
      redis.call('ZADD', seen, ms(now), sub)
    else
      redis.call('HDEL', records, sub)
      redis.call('ZREM', seen, sub)
      redis.call('ZREM', INDEX .. tag(tenant), sub)
      redis.call('HDEL', BEATS .. tag(tenant), sub)
    end
  end
end

-- Publish `record`'s `device.offline` (its `o` finished with `reason`) to its tenant's
-- status room and set it offline in the fleet. Returns the room, which the caller settles.
local function report_offline(record, reason, size, now)
  local tenant = record.t
  record_fleet(tenant, record.s, record.f .. ',"online":false,"node":null,"since":'
    .. ms(now) .. ',"offline_reason":"' .. reason .. '"}}')
  seen_fleet(tenant, record.s, now, record.k)
  local prefix, suffix = finish(record.o, reason, now, size > 0)
  local key = tag(tenant) .. ':status'
  append(key, prefix, suffix, size)
  return key
end

-- Report `record`'s device offline now, or, with a handover window, once the window has
-- passed without the device reconnecting anywhere (see `CONNECT` and `TENANT_REAP`).
local function went_offline(record, instance, reason, handover_ms, size, ttl_ms, epoch, now)
  if handover_ms > 0 then
    local tenant = record.t
    redis.call('ZADD', leaving_of(tenant, instance), ms(now + handover_ms), record.s)
    redis.call('HSET', LEAVERS .. tag(tenant), record.s,
      cjson.encode({{record.o, reason, record.f, record.k, instance}}))
  else
    settle(report_offline(record, reason, size, now), size, ttl_ms, epoch, now)
  end
end
"""
)

REGISTER = (
    PRESENCE_LIBRARY
    + """
-- ARGV: instance, ttl (ms)
redis.call('ZADD', NODES, ms(now_ms() + tonumber(ARGV[2])), ARGV[1])
return 1
"""
)

REFRESH = (
    PRESENCE_LIBRARY
    + """
-- ARGV: instance, ttl (ms). 0 when the instance has been declared dead.
if not alive(ARGV[1]) then return 0 end
redis.call('ZADD', NODES, ms(now_ms() + tonumber(ARGV[2])), ARGV[1])
return 1
"""
)

RETIRE = (
    PRESENCE_LIBRARY
    + """
-- ARGV: instance, reason. The instance leaves; the reapers clean up what it left behind.
redis.call('ZREM', NODES, ARGV[1])
redis.call('HDEL', STATS, ARGV[1])
redis.call('SREM', DRAINING, ARGV[1])
redis.call('HSETNX', REAPING, ARGV[1], ARGV[2])
return 1
"""
)

ENROL = (
    PRESENCE_LIBRARY
    + """
-- ARGV: instance, '1' when it is draining (else ''), then the tenants it is about to
-- write in. 0, enrolling nothing, when the instance is no longer live.
if not alive(ARGV[1]) then return 0 end
if ARGV[2] == '1' then redis.call('SADD', DRAINING, ARGV[1]) end
if #ARGV > 2 then redis.call('SADD', TENANTS .. ARGV[1], unpack(ARGV, 3)) end
return 1
"""
)

CONNECT = (
    PRESENCE_LIBRARY
    + """
-- ARGV: epoch, instance, size, ttl, fleet ttl, fleet keep, tenant, pkey, record, sub,
-- online prefix ('' unless a device), online suffix, online fleet record, then pairs of
-- room key and member entry.
local instance, tenant, pkey = ARGV[2], ARGV[7], ARGV[8]
if not alive_in(tenant, instance) then return 0 end
redis.call('HSET', sockets_of(tenant, instance), pkey, ARGV[9])
local rooms = rooms_of(tenant, instance, pkey)
for at = 14, #ARGV, 2 do
  redis.call('SADD', rooms, ARGV[at])
  redis.call('HSET', ROOM .. ARGV[at], pkey, ARGV[at + 1])
end
if ARGV[11] ~= '' then
  local sub, now = ARGV[10], now_ms()
  local devices = devices_of(tenant, sub)
  if redis.call('SADD', devices, pkey) == 1 and redis.call('SCARD', devices) == 1 then
    if redis.call('HDEL', LEAVERS .. tag(tenant), sub) == 0 then
      append_and_publish(tag(tenant) .. ':status', ARGV[11], ARGV[12], tonumber(ARGV[3]),
        tonumber(ARGV[4]), ARGV[1], now)
      record_fleet(tenant, sub, ARGV[13])
    end  -- else handed over: it never went offline
  end
  seen_fleet(tenant, sub, now, tonumber(ARGV[6]))
  forget_fleet(tenant, tonumber(ARGV[5]), now)
end
return 1
"""
)

JOIN = (
    PRESENCE_LIBRARY
    + """
-- ARGV: epoch, instance, size, ttl, fleet ttl, fleet keep, tenant, pkey, room key, member
-- entry
local instance, tenant, pkey = ARGV[2], ARGV[7], ARGV[8]
if not alive_in(tenant, instance) then return 0 end
if redis.call('HEXISTS', sockets_of(tenant, instance), pkey) == 0 then return 1 end
redis.call('SADD', rooms_of(tenant, instance, pkey), ARGV[9])
redis.call('HSET', ROOM .. ARGV[9], pkey, ARGV[10])
return 1
"""
)

LEAVE = (
    PRESENCE_LIBRARY
    + """
-- ARGV: epoch, instance, size, ttl, fleet ttl, fleet keep, tenant, pkey, room key
local instance, tenant, pkey = ARGV[2], ARGV[7], ARGV[8]
if not alive_in(tenant, instance) then return 0 end
if redis.call('SREM', rooms_of(tenant, instance, pkey), ARGV[9]) == 1 then
  redis.call('HDEL', ROOM .. ARGV[9], pkey)
end
return 1
"""
)

DISCONNECT = (
    PRESENCE_LIBRARY
    + """
-- ARGV: epoch, instance, size, ttl, fleet ttl, fleet keep, tenant, pkey, reason, handover
-- window (ms, 0 = none)
local instance, tenant = ARGV[2], ARGV[7]
if not alive_in(tenant, instance) then return 0 end
local record = drop(tenant, instance, ARGV[8])
if record then
  went_offline(record, instance, ARGV[9], tonumber(ARGV[10]), tonumber(ARGV[3]),
    tonumber(ARGV[4]), ARGV[1], now_ms())
end
return 1
"""
)

HEARTBEATS = (
    PRESENCE_LIBRARY
    + """
-- ARGV: epoch, instance, size, ttl, fleet ttl, fleet keep, tenant, then per heartbeat:
-- pkey, sub, record, event prefix, event suffix
local instance, tenant = ARGV[2], ARGV[7]
if not alive_in(tenant, instance) then return 0 end
local sockets, status = sockets_of(tenant, instance), tag(tenant) .. ':status'
local size, now = tonumber(ARGV[3]), now_ms()
local beats, seen = BEATS .. tag(tenant), SEEN .. tag(tenant)
for at = 8, #ARGV, 5 do
  if redis.call('HEXISTS', sockets, ARGV[at]) == 1 then
    redis.call('HSET', beats, ARGV[at + 1], ARGV[at + 2])
    redis.call('ZADD', seen, ms(now), ARGV[at + 1])
    append(status, ARGV[at + 3], ARGV[at + 4], size)
  end
end
settle(status, size, tonumber(ARGV[4]), ARGV[1], now)
keep_fleet(tenant, tonumber(ARGV[6]))
return 1
"""
)

REAP_NODES = (
    PRESENCE_LIBRARY
    + """
-- ARGV: reason, the most tenants to list. Declares every expired instance dead, then
-- lists the work of the reapers: {instances declared dead now, then per instance: the
-- instance, its offline reason ('' for a live, draining one), how many tenants follow,
-- the tenants}. A reaped instance whose tenants are all done is forgotten here.
local now, most = now_ms(), tonumber(ARGV[2])
local expired = redis.call('ZRANGEBYSCORE', NODES, '-inf', ms(now))
for _, instance in ipairs(expired) do
  redis.call('ZREM', NODES, instance)
  redis.call('HDEL', STATS, instance)
  redis.call('SREM', DRAINING, instance)
  redis.call('HSETNX', REAPING, instance, ARGV[1])
end
local work = {#expired}
local function list(instance, reason)
  local tenants = redis.call('SRANDMEMBER', TENANTS .. instance, most)
  if #tenants == 0 then return end
  most = most - #tenants
  table.insert(work, instance)
  table.insert(work, reason)
  table.insert(work, #tenants)
  for _, tenant in ipairs(tenants) do table.insert(work, tenant) end
end
local reaping = redis.call('HGETALL', REAPING)
for i = 1, #reaping, 2 do
  if redis.call('EXISTS', TENANTS .. reaping[i]) == 0 then
    redis.call('HDEL', REAPING, reaping[i])
  elseif most > 0 then
    list(reaping[i], reaping[i + 1])
  end
end
for _, instance in ipairs(redis.call('SMEMBERS', DRAINING)) do
  if most > 0 then list(instance, '') end
end
return work
"""
)

TENANT_REAP = (
    PRESENCE_LIBRARY
    + """
-- ARGV: epoch, instance, size, ttl, fleet ttl, fleet keep, tenant, the instance's offline
-- reason ('' while it lives: a draining one), budget (sockets and leavers).
-- Cleans up to `budget` sockets of a dead instance in the tenant, after marking it dead
-- there, and reports offline its drained devices whose time has passed.
-- Returns {devices reported offline, 1 when the instance is done with the tenant, 1 when
-- the budget ran out}.
local instance, tenant, reason = ARGV[2], ARGV[7], ARGV[8]
local size, ttl_ms, budget = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[9])
local now, offline, used = now_ms(), 0, 0
if reason ~= '' then
  local dead = DEAD .. tag(tenant)
  redis.call('ZADD', dead, ms(now), instance)
  redis.call('ZREMRANGEBYSCORE', dead, '-inf', ms(now - """
    + str(DEAD_KEEP_MS)
    + """))
  redis.call('PEXPIRE', dead, """
    + str(DEAD_KEEP_MS)
    + """)
  local pkeys = redis.call('HRANDFIELD', sockets_of(tenant, instance), budget)
  used = #pkeys
  for _, pkey in ipairs(pkeys) do
    local record = drop(tenant, instance, pkey)
    if record then
      report_offline(record, reason, size, now)
      offline = offline + 1
    end
  end
end
local leaving, leavers = leaving_of(tenant, instance), LEAVERS .. tag(tenant)
local due = redis.call('ZRANGEBYSCORE', leaving, '-inf', ms(now), 'LIMIT', 0, budget)
used = used + #due
for _, sub in ipairs(due) do
  redis.call('ZREM', leaving, sub)
  local raw = redis.call('HGET', leavers, sub)
  local gone = raw and cjson.decode(raw)
  if gone and gone[5] == instance then
    redis.call('HDEL', leavers, sub)
    if redis.call('SCARD', devices_of(tenant, sub)) == 0 then
      local record = {t = tenant, s = sub, o = gone[1], f = gone[3], k = gone[4]}
      report_offline(record, gone[2], size, now)
      offline = offline + 1
    end
  end
end
if offline > 0 then settle(tag(tenant) .. ':status', size, ttl_ms, ARGV[1], now) end
local done = 0
if reason ~= '' and redis.call('EXISTS', sockets_of(tenant, instance), leaving) == 0 then
  done = 1
end
return {offline, done, used >= budget and 1 or 0}
"""
)

REAPED = (
    PRESENCE_LIBRARY
    + """
-- ARGV: instance, then tenants it is done with. The instance is forgotten with its last.
local tenants = TENANTS .. ARGV[1]
redis.call('SREM', tenants, unpack(ARGV, 2))
if redis.call('EXISTS', tenants) == 0 then redis.call('HDEL', REAPING, ARGV[1]) end
return 1
"""
)

NODE_FIGURES = (
    PRESENCE_LIBRARY
    + """
-- The latest figures of every live instance.
local live = redis.call('ZRANGEBYSCORE', NODES, ms(now_ms()), '+inf')
if #live == 0 then return {} end
return redis.call('HMGET', STATS, unpack(live))
"""
)

FLEET_PAGE = (
    PRESENCE_LIBRARY
    + f"""
-- ARGV: tenant, after ('' for the first page), limit, budget, fleet ttl (ms), then the
-- filters loc, group and online ('true' or 'false'), each '' for none.
-- Walks the tenant's fleet in sub order after `after`, {FLEET_CHUNK} at a time, and stops
-- at `limit` matches or after looking at `budget` devices. Returns the next page's `after`
-- (false on the last page), then per device: sub, record, last heartbeat (false for
-- none), last seen.
local tenant, after = ARGV[1], ARGV[2]
local limit, budget, ttl_ms = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local loc, group, online = ARGV[6], ARGV[7], ARGV[8]
local records, seen, index = FLEET .. tag(tenant), SEEN .. tag(tenant), INDEX .. tag(tenant)
local cutoff = now_ms() - ttl_ms

local function matches(device)
  if loc ~= '' and device.loc ~= loc then return false end
  if online ~= '' and tostring(device.online) ~= online then return false end
  if group == '' then return true end
  for _, each in ipairs(device.groups) do
    if each == group then return true end
  end
  return false
end

local found, matched, looked, last = {{false}}, 0, 0, nil
local from = after == '' and '-' or '(' .. after
while matched < limit and looked < budget do
  local subs = redis.call('ZRANGEBYLEX', index, from, '+', 'LIMIT', 0,
    math.min({FLEET_CHUNK}, budget - looked))
  if #subs == 0 then break end
  local raw = redis.call('HMGET', records, unpack(subs))
  local beats = redis.call('HMGET', BEATS .. tag(tenant), unpack(subs))
  local scores = redis.call('ZMSCORE', seen, unpack(subs))
  for i, sub in ipairs(subs) do
    looked, last = looked + 1, sub
    local score = scores[i] and tonumber(scores[i])
    if raw[i] and score then
      local device = cjson.decode(raw[i])
      if (device.online or score >= cutoff) and matches(device) then
        table.insert(found, sub)
        table.insert(found, raw[i])
        table.insert(found, beats[i])
        table.insert(found, scores[i])
        matched = matched + 1
        if matched == limit then break end
      end
    end
  end
  from = '(' .. last
end
if last and #redis.call('ZRANGEBYLEX', index, '(' .. last, '+', 'LIMIT', 0, 1) > 0 then
  found[1] = last
end
return found
"""
)


class Scripts:
    """The presence scripts, registered on one Redis client: the calls a node makes."""

    def __init__(self, redis: RedisClient, sharded: bool) -> None:
        self._redis = redis
        self.register = register(redis, REGISTER, sharded)
        self.refresh = register(redis, REFRESH, sharded)
        self.retire = register(redis, RETIRE, sharded)
        self.enrol = register(redis, ENROL, sharded)
        self.reap_nodes = register(redis, REAP_NODES, sharded)
        self.tenant_reap = register(redis, TENANT_REAP, sharded)
        self.reaped = register(redis, REAPED, sharded)
        self.node_figures = register(redis, NODE_FIGURES, sharded)
        self.connect = register(redis, CONNECT, sharded)
        self.join = register(redis, JOIN, sharded)
        self.leave = register(redis, LEAVE, sharded)
        self.disconnect = register(redis, DISCONNECT, sharded)
        self.heartbeats = register(redis, HEARTBEATS, sharded)

    async def load(self) -> None:
        """Load the scripts that are only ever called in pipelines (by their hash, which
        fails in a Redis that lost them; the others load themselves when missing)."""
        pipelined = (self.connect, self.join, self.leave, self.disconnect, self.heartbeats)
        await load(self._redis, (*pipelined, self.tenant_reap))
