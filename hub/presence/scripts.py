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
| `hub:hb:<tenant>` | hash | sub to the device's last heartbeat |
| `hub:leaving` | sorted set | devices (`<tenant>:<sub>`) a drain closed, by offline time |
| `hub:leavers` | hash | such a device to `[its device.offline head, the reason]` (JSON) |
| `hub:stats` | hash | instance to its node's latest figures (JSON) |

A device in `hub:leaving` that reconnects anywhere before its time is simply taken out:
it never went offline.

A socket's record is JSON: `t` its tenant, `s` its sub and, for a device, `o` its
`device.offline` event cut just before the reason (`envelope.head`).

Every script called for a socket takes the same first arguments: the epoch for a room
history that has none, the instance, the `status` room's history size and TTL (ms), then
the socket's pkey (for `HEARTBEATS`, one group of arguments per heartbeat).

Every script that writes for an instance first checks that the instance is still live:
once a survivor has declared it dead, nothing it sends can bring its entries back. Each
script is atomic, which is what makes online/offline exactly-once across nodes.
"""

from __future__ import annotations

from redis.asyncio import Redis

from hub.broker.scripts import LIBRARY

NODES = "hub:nodes"
STATS = "hub:stats"
ROOM_PREFIX = "hub:pr:"
HEARTBEAT_PREFIX = "hub:hb:"

PRESENCE_LIBRARY = (
    LIBRARY
    + f"""
local NODES, REAPING, STATS = '{NODES}', 'hub:reaping', '{STATS}'
local SOCKETS, ROOM, BEATS = 'hub:pn:', '{ROOM_PREFIX}', '{HEARTBEAT_PREFIX}'
local SOCKET_ROOMS = 'hub:ps:'

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
  redis.call('HDEL', BEATS .. record.t, record.s)
  return record
end

-- Publish `device.offline` to `tenant`'s status room: the event `head` (a socket record's
-- `o`) finished with `reason`. Returns the room, which the caller settles.
local function report_offline(tenant, head, reason, size, now)
  local prefix, suffix = finish(head, reason, now, size > 0)
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
    redis.call('HSET', LEAVERS, device, cjson.encode({{record.o, reason}}))
  else
    settle(report_offline(record.t, record.o, reason, size, now), size, ttl_ms, epoch, now)
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
-- ARGV: epoch, instance, size, ttl, pkey, record, tenant, sub, online prefix ('' unless
-- a device), online suffix, then pairs of room key and member entry.
if not alive(ARGV[2]) then return 0 end
local pkey = ARGV[5]
redis.call('HSET', SOCKETS .. ARGV[2], pkey, ARGV[6])
local rooms = rooms_of(ARGV[2], pkey)
for at = 11, #ARGV, 2 do
  redis.call('SADD', rooms, ARGV[at])
  redis.call('HSET', ROOM .. ARGV[at], pkey, ARGV[at + 1])
end
if ARGV[9] ~= '' then
  local devices = 'hub:pd:' .. ARGV[7] .. ':' .. ARGV[8]
  if redis.call('SADD', devices, pkey) == 1 and redis.call('SCARD', devices) == 1 then
    local device = ARGV[7] .. ':' .. ARGV[8]
    if redis.call('ZREM', LEAVING, device) == 1 then
      redis.call('HDEL', LEAVERS, device)  -- handed over: it never went offline
    else
      append_and_publish(ARGV[7] .. ':status', ARGV[9], ARGV[10], tonumber(ARGV[3]),
        tonumber(ARGV[4]), ARGV[1], now_ms())
    end
  end
end
return 1
"""
)

JOIN = (
    PRESENCE_LIBRARY
    + """
-- ARGV: epoch, instance, size, ttl, pkey, room key, member entry
if not alive(ARGV[2]) then return 0 end
local pkey = ARGV[5]
if redis.call('HEXISTS', SOCKETS .. ARGV[2], pkey) == 0 then return 1 end
redis.call('SADD', rooms_of(ARGV[2], pkey), ARGV[6])
redis.call('HSET', ROOM .. ARGV[6], pkey, ARGV[7])
return 1
"""
)

LEAVE = (
    PRESENCE_LIBRARY
    + """
-- ARGV: epoch, instance, size, ttl, pkey, room key
if not alive(ARGV[2]) then return 0 end
local pkey = ARGV[5]
if redis.call('SREM', rooms_of(ARGV[2], pkey), ARGV[6]) == 1 then
  redis.call('HDEL', ROOM .. ARGV[6], pkey)
end
return 1
"""
)

DISCONNECT = (
    PRESENCE_LIBRARY
    + """
-- ARGV: epoch, instance, size, ttl, pkey, reason, handover window (ms, 0 = none)
if not alive(ARGV[2]) then return 0 end
local record = drop(ARGV[2], ARGV[5])
if record then
  went_offline(record, ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[3]), tonumber(ARGV[4]),
    ARGV[1], now_ms())
end
return 1
"""
)

HEARTBEATS = (
    PRESENCE_LIBRARY
    + """
-- ARGV: epoch, instance, size, ttl, then per heartbeat: pkey, tenant, sub, record,
-- event prefix, event suffix
if not alive(ARGV[2]) then return 0 end
local sockets = SOCKETS .. ARGV[2]
local size = tonumber(ARGV[3])
local rooms = {}
for at = 5, #ARGV, 6 do
  if redis.call('HEXISTS', sockets, ARGV[at]) == 1 then
    redis.call('HSET', BEATS .. ARGV[at + 1], ARGV[at + 2], ARGV[at + 3])
    local key = ARGV[at + 1] .. ':status'
    append(key, ARGV[at + 4], ARGV[at + 5], size)
    rooms[key] = true
  end
end
local now = now_ms()
for key in pairs(rooms) do settle(key, size, tonumber(ARGV[4]), ARGV[1], now) end
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
  local tenant = string.match(device, '^([^:]+):')
  if leaver and redis.call('SCARD', 'hub:pd:' .. device) == 0 then
    local gone = cjson.decode(leaver)
    rooms[report_offline(tenant, gone[1], gone[2], size, now)] = true
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
        rooms[report_offline(record.t, record.o, reason, size, now)] = true
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
