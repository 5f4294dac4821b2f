"""Lua scripts that keep presence in Redis and publish the lifecycle events it implies.

Keys (`<instance>` is one registration of one node process, `<pkey>` one socket of it):

| key | type | holds |
|---|---|---|
| `hub:nodes` | sorted set | live instances, scored by the time (ms, Redis clock) they expire |
| `hub:reaping` | hash | instances declared dead, still being cleaned up, to the offline reason |
| `hub:pn:<instance>` | hash | pkey to the socket's record (below) |
| `hub:ps:<instance>:<pkey>` | set | the socket's room keys: joining, leaving cost O(1) |
| `hub:pr:<room key>` | hash | pkey to the member entry the presence endpoint lists |
| `hub:pd:<tenant>:<sub>` | set | a device's sockets across the cluster: online while not empty |
| `hub:hb:<tenant>` | hash | sub to the device's last heartbeat, kept while the fleet is |
| `hub:fd:<tenant>` | hash | sub to the device's fleet record (JSON, below) |
| `hub:fs:<tenant>` | sorted set | sub, scored by when (ms, Redis clock) the device was last seen |
| `hub:fx:<tenant>` | sorted set | sub, every score 0: the fleet in sub order, for paging |
| `hub:leaving` | sorted set | devices (`<tenant>:<sub>`) a drain closed, by offline time |
| `hub:leavers` | hash | such a device to `[its record's o, the reason, its f, its k]` (JSON) |
| `hub:stats` | hash | instance to its node's latest figures (JSON) |

A device in `hub:leaving` that reconnects anywhere before its time is simply taken out:
it never went offline (and stays online in the fleet).

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
(`redis.fleet_keep`: the TTL, plus the longest an online device goes without a write), so
a tenant gone quiet disappears whole.

Every script called for a socket takes the same first arguments: the epoch for a room
history that has none, the instance, the `status` room's history size and TTL (ms), the
fleet TTL and keep (ms), then the socket's pkey (for `HEARTBEATS`, one group of arguments
per heartbeat).

Every script that writes for an instance first checks that the instance is still live:
once a survivor has declared it dead, nothing it sends can bring its entries back. Each
script is atomic, which is what makes online/offline exactly-once across nodes.
"""

from __future__ import annotations

from redis.asyncio import Redis

from hub.broker.scripts import LIBRARY
from hub.fleet import FORGET_BATCH

NODES = "hub:nodes"
STATS = "hub:stats"
ROOM_PREFIX = "hub:pr:"
HEARTBEAT_PREFIX = "hub:hb:"
FLEET_PREFIX = "hub:fd:"
SEEN_PREFIX = "hub:fs:"
INDEX_PREFIX = "hub:fx:"
FLEET_CHUNK = 256
"""Fleet entries a read fetches per step."""

PRESENCE_LIBRARY = (
    LIBRARY
    + f"""
local NODES, REAPING, STATS = '{NODES}', 'hub:reaping', '{STATS}'
local SOCKETS, ROOM, BEATS = 'hub:pn:', '{ROOM_PREFIX}', '{HEARTBEAT_PREFIX}'
local SOCKET_ROOMS = 'hub:ps:'
local FLEET, SEEN, INDEX = '{FLEET_PREFIX}', '{SEEN_PREFIX}', '{INDEX_PREFIX}'

local function rooms_of(instance, pkey)
  return SOCKET_ROOMS .. instance .. ':' .. pkey
end
local LEAVING, LEAVERS = 'hub:leaving', 'hub:leavers'

local function alive(instance)
  return redis.call('ZSCORE', NODES, instance)
end

-- Take one socket out of presence; returns its record when it was its device's last.
local function drop(instance, pkey)
  local sockets = SOCKETS .. instance
  local raw = redis.call('HGET', sockets, pkey)
  if not raw then return nil end
  redis.call('HDEL', sockets, pkey)
  local record = cjson.decode(raw)
  local rooms = rooms_of(instance, pkey)
  for _, key in ipairs(redis.call('SMEMBERS', rooms)) do redis.call('HDEL', ROOM .. key, pkey) end
  redis.call('DEL', rooms)
  if not record.o then return nil end
  local devices = 'hub:pd:' .. record.t .. ':' .. record.s
  redis.call('SREM', devices, pkey)
  if redis.call('SCARD', devices) > 0 then return nil end
  return record
end

-- Push back the expiry of `tenant`'s fleet keys to `keep_ms` from now.
local function keep_fleet(tenant, keep_ms)
  for _, prefix in ipairs({{FLEET, SEEN, INDEX, BEATS}}) do
    redis.call('PEXPIRE', prefix .. tenant, ms(keep_ms))
  end
end

-- `tenant`'s device `sub` was seen at `now`.
local function seen_fleet(tenant, sub, now, keep_ms)
  redis.call('ZADD', SEEN .. tenant, ms(now), sub)
  keep_fleet(tenant, keep_ms)
end

-- The fleet record (JSON) of `tenant`'s device `sub`, as it went online or offline.
local function record_fleet(tenant, sub, record)
  redis.call('HSET', FLEET .. tenant, sub, record)
  redis.call('ZADD', INDEX .. tenant, 0, sub)
end

-- Forget up to {FORGET_BATCH} of `tenant`'s offline devices last seen more than `ttl_ms`
-- before `now`; an online one among them is seen now instead.
local function forget_fleet(tenant, ttl_ms, now)
  local records, seen = FLEET .. tenant, SEEN .. tenant
  local old = redis.call('ZRANGEBYSCORE', seen, '-inf', '(' .. ms(now - ttl_ms),
    'LIMIT', 0, {FORGET_BATCH})
  for _, sub in ipairs(old) do
    local record = redis.call('HGET', records, sub)
    if record and cjson.decode(record).online then
      redis.call('ZADD', seen, ms(now), sub)
    else
      redis.call('HDEL', records, sub)
      redis.call('ZREM', seen, sub)
      redis.call('ZREM', INDEX .. tenant, sub)
      redis.call('HDEL', BEATS .. tenant, sub)
    end
  end
end

-- Publish `record`'s `device.offline` (its `o` finished with `reason`) to its tenant's
-- status room and set it offline in the fleet. Returns the room, which the caller settles.
-- A socket record without `f` (from a node of a version without the fleet) is only
-- reported.
local function report_offline(record, reason, size, now)
  local tenant = record.t
  if record.f then
    record_fleet(tenant, record.s, record.f .. ',"online":false,"node":null,"since":'
      .. ms(now) .. ',"offline_reason":"' .. reason .. '"}}')
    seen_fleet(tenant, record.s, now, record.k)
  end
  local prefix, suffix = finish(record.o, reason, now, size > 0)
  local key = tenant .. ':status'
  append(key, prefix, suffix, size)
  return key
end

-- Report `record`'s device offline now, or, with a handover window, once the window has
-- passed without the device reconnecting anywhere (see `CONNECT` and `REAP`).
local function went_offline(record, reason, handover_ms, size, ttl_ms, epoch, now)
  if handover_ms > 0 then
    local device = record.t .. ':' .. record.s
    redis.call('ZADD', LEAVING, ms(now + handover_ms), device)
    redis.call('HSET', LEAVERS, device, cjson.encode({{record.o, reason, record.f, record.k}}))
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
-- ARGV: instance, reason. The instance leaves; `REAP` cleans up what it left behind.
redis.call('ZREM', NODES, ARGV[1])
redis.call('HDEL', STATS, ARGV[1])
redis.call('HSETNX', REAPING, ARGV[1], ARGV[2])
return 1
"""
)

CONNECT = (
    PRESENCE_LIBRARY
    + """
-- ARGV: epoch, instance, size, ttl, fleet ttl, fleet keep, pkey, record, tenant, sub,
-- online prefix ('' unless a device), online suffix, online fleet record, then pairs of
-- room key and member entry.
if not alive(ARGV[2]) then return 0 end
local pkey = ARGV[7]
redis.call('HSET', SOCKETS .. ARGV[2], pkey, ARGV[8])
local rooms = rooms_of(ARGV[2], pkey)
for at = 14, #ARGV, 2 do
  redis.call('SADD', rooms, ARGV[at])
  redis.call('HSET', ROOM .. ARGV[at], pkey, ARGV[at + 1])
end
if ARGV[11] ~= '' then
  local tenant, sub, now = ARGV[9], ARGV[10], now_ms()
  local device = tenant .. ':' .. sub
  local devices = 'hub:pd:' .. device
  if redis.call('SADD', devices, pkey) == 1 and redis.call('SCARD', devices) == 1 then
    if redis.call('ZREM', LEAVING, device) == 1 then
      redis.call('HDEL', LEAVERS, device)  -- handed over: it never went offline
    else
      append_and_publish(tenant .. ':status', ARGV[11], ARGV[12], tonumber(ARGV[3]),
        tonumber(ARGV[4]), ARGV[1], now)
      record_fleet(tenant, sub, ARGV[13])
    end
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
-- ARGV: epoch, instance, size, ttl, fleet ttl, fleet keep, pkey, room key, member entry
if not alive(ARGV[2]) then return 0 end
local pkey = ARGV[7]
if redis.call('HEXISTS', SOCKETS .. ARGV[2], pkey) == 0 then return 1 end
redis.call('SADD', rooms_of(ARGV[2], pkey), ARGV[8])
redis.call('HSET', ROOM .. ARGV[8], pkey, ARGV[9])
return 1
"""
)

LEAVE = (
    PRESENCE_LIBRARY
    + """
-- ARGV: epoch, instance, size, ttl, fleet ttl, fleet keep, pkey, room key
if not alive(ARGV[2]) then return 0 end
local pkey = ARGV[7]
if redis.call('SREM', rooms_of(ARGV[2], pkey), ARGV[8]) == 1 then
  redis.call('HDEL', ROOM .. ARGV[8], pkey)
end
return 1
"""
)

DISCONNECT = (
    PRESENCE_LIBRARY
    + """
-- ARGV: epoch, instance, size, ttl, fleet ttl, fleet keep, pkey, reason, handover window
-- (ms, 0 = none)
if not alive(ARGV[2]) then return 0 end
local record = drop(ARGV[2], ARGV[7])
if record then
  went_offline(record, ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[3]), tonumber(ARGV[4]),
    ARGV[1], now_ms())
end
return 1
"""
)

HEARTBEATS = (
    PRESENCE_LIBRARY
    + """
-- ARGV: epoch, instance, size, ttl, fleet ttl, fleet keep, then per heartbeat: pkey,
-- tenant, sub, record, event prefix, event suffix
if not alive(ARGV[2]) then return 0 end
local sockets = SOCKETS .. ARGV[2]
local size, now = tonumber(ARGV[3]), now_ms()
local tenants = {}
for at = 7, #ARGV, 6 do
  if redis.call('HEXISTS', sockets, ARGV[at]) == 1 then
    local tenant, sub = ARGV[at + 1], ARGV[at + 2]
    redis.call('HSET', BEATS .. tenant, sub, ARGV[at + 3])
    redis.call('ZADD', SEEN .. tenant, ms(now), sub)
    append(tenant .. ':status', ARGV[at + 4], ARGV[at + 5], size)
    tenants[tenant] = true
  end
end
for tenant in pairs(tenants) do
  settle(tenant .. ':status', size, tonumber(ARGV[4]), ARGV[1], now)
  keep_fleet(tenant, tonumber(ARGV[6]))
end
return 1
"""
)

REAP = (
    PRESENCE_LIBRARY
    + """
-- ARGV: epoch, budget (sockets), status history size, ttl (ms), reason.
-- Reports offline the drained devices whose handover window passed; declares every
-- expired instance dead, then cleans up to `budget` sockets of dead instances.
-- Returns {devices reported offline, instances declared dead now, left}.
local now = now_ms()
local budget, size, ttl_ms = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local offline, rooms = 0, {}
for _, device in ipairs(redis.call('ZRANGEBYSCORE', LEAVING, '-inf', ms(now))) do
  redis.call('ZREM', LEAVING, device)
  local leaver = redis.call('HGET', LEAVERS, device)
  redis.call('HDEL', LEAVERS, device)
  if leaver and redis.call('SCARD', 'hub:pd:' .. device) == 0 then
    local tenant, sub = string.match(device, '^([^:]+):(.*)$')
    local gone = cjson.decode(leaver)
    local record = {t = tenant, s = sub, o = gone[1], f = gone[3], k = gone[4]}
    rooms[report_offline(record, gone[2], size, now)] = true
    offline = offline + 1
  end
end
local expired = redis.call('ZRANGEBYSCORE', NODES, '-inf', ms(now))
for _, instance in ipairs(expired) do
  redis.call('ZREM', NODES, instance)
  redis.call('HDEL', STATS, instance)
  redis.call('HSETNX', REAPING, instance, ARGV[5])
end
local reaping = redis.call('HGETALL', REAPING)
for i = 1, #reaping, 2 do
  local instance, reason = reaping[i], reaping[i + 1]
  if budget > 0 then
    local pkeys = redis.call('HRANDFIELD', SOCKETS .. instance, budget)
    for _, pkey in ipairs(pkeys) do
      local record = drop(instance, pkey)
      if record then
        rooms[report_offline(record, reason, size, now)] = true
        offline = offline + 1
      end
    end
    budget = budget - #pkeys
  end
  if redis.call('EXISTS', SOCKETS .. instance) == 0 then redis.call('HDEL', REAPING, instance) end
end
for key in pairs(rooms) do settle(key, size, ttl_ms, ARGV[1], now) end
return {offline, #expired, redis.call('HLEN', REAPING)}
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
local records, seen, index = FLEET .. tenant, SEEN .. tenant, INDEX .. tenant
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
  local beats = redis.call('HMGET', BEATS .. tenant, unpack(subs))
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

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        register = redis.register_script
        self.register = register(REGISTER)
        self.refresh = register(REFRESH)
        self.retire = register(RETIRE)
        self.reap = register(REAP)
        self.node_figures = register(NODE_FIGURES)
        self.connect = register(CONNECT)
        self.join = register(JOIN)
        self.leave = register(LEAVE)
        self.disconnect = register(DISCONNECT)
        self.heartbeats = register(HEARTBEATS)

    async def load(self) -> None:
        """Load the scripts that are only ever called in pipelines (by their hash, which
        fails in a Redis that lost them; the others load themselves when missing)."""
        for script in (self.connect, self.join, self.leave, self.disconnect, self.heartbeats):
            await self._redis.script_load(script.script)
