"""Lua scripts that make history and pub/sub one atomic step in Redis.

Each room has a stream `hub:h:<key>` (entries hold the event's bytes up to its id) and a
hash `hub:m:<key>`: `e` the epoch, `t` the newest id retention dropped. The epoch is made
when the hash is missing, so a Redis that lost its data hands out a new epoch.

`LIBRARY` holds the Lua functions other scripts (presence) build on, so that every event
the hub publishes, whoever publishes it, goes through the same append-and-publish step.
"""

from __future__ import annotations

from hub.envelope import LUA as ENVELOPE

CHANNEL_PREFIX = "hub:room:"
STREAM_PREFIX = "hub:h:"
META_PREFIX = "hub:m:"
TENANT_BYTES_PREFIX = "hub:tb:"
"""A tenant's published-bytes bucket."""
TENANT_ROOMS_PREFIX = "hub:tr:"
"""A tenant's rooms with history, scored by when their history expires."""

LIBRARY = (
    ENVELOPE
    + f"""
local CHANNEL, STREAM, META = '{CHANNEL_PREFIX}', '{STREAM_PREFIX}', '{META_PREFIX}'

local function ms(number)
  return string.format('%.0f', number)
end

local function now_ms()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end

-- Publish `prefix .. id .. suffix` to room `key` after appending it to the room's history
-- (`prefix .. suffix` when the room keeps no history); returns the id, or false. Each room
-- appended to must then be settled once, before the script ends.
local function append(key, prefix, suffix, size)
  if size <= 0 then
    redis.call('PUBLISH', CHANNEL .. key, prefix .. suffix)
    return false
  end
  local id = redis.call('XADD', STREAM .. key, '*', 'p', prefix)
  redis.call('PUBLISH', CHANNEL .. key, prefix .. id .. suffix)
  return id
end

-- Keep room `key`'s history within `size` events and `ttl_ms`, remembering the newest id
-- dropped (`t`), and give it an epoch if it has none.
local function settle(key, size, ttl_ms, epoch, now)
  if size <= 0 then return end
  local stream, meta = STREAM .. key, META .. key
  redis.call('HSETNX', meta, 'e', epoch)
  local excess = redis.call('XLEN', stream) - size
  if excess > 0 then
    local gone = redis.call('XRANGE', stream, '-', '+', 'COUNT', excess)
    redis.call('HSET', meta, 't', gone[#gone][1])
    redis.call('XTRIM', stream, 'MAXLEN', size)
  end
  local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  if #oldest > 0 and tonumber(string.match(oldest[1][1], '^(%d+)')) < now - ttl_ms then
    local min_id = ms(now - ttl_ms) .. '-0'
    local gone = redis.call('XREVRANGE', stream, '(' .. min_id, '-', 'COUNT', 1)
    redis.call('HSET', meta, 't', gone[1][1])
    redis.call('XTRIM', stream, 'MINID', min_id)
  end
  redis.call('PEXPIRE', stream, ttl_ms)
  redis.call('PEXPIRE', meta, ttl_ms)
end

local function append_and_publish(key, prefix, suffix, size, ttl_ms, epoch, now)
  local id = append(key, prefix, suffix, size)
  settle(key, size, ttl_ms, epoch, now)
  return id
end
"""
)

PUBLISH = (
    LIBRARY
    + f"""
-- ARGV: epoch, tenant, bytes/s, burst, rooms with history (0 = no bound), then per event:
-- room key, prefix, suffix, history size, history ttl (ms). Returns the ids, or, publishing
-- nothing, 'bytes:<ms to wait>' or 'rooms' when a tenant bound refuses.
local now = now_ms()
local tenant, rate, burst, most = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local events = (#ARGV - 5) / 5
if rate > 0 then
  local cost = 0
  for i = 0, events - 1 do cost = cost + #ARGV[7 + i * 5] + #ARGV[8 + i * 5] end
  local bucket = '{TENANT_BYTES_PREFIX}' .. tenant
  local state = redis.call('HMGET', bucket, 't', 's')
  local tokens, stamp = tonumber(state[1]) or burst, tonumber(state[2]) or now
  tokens = math.min(burst, tokens + (now - stamp) * rate / 1000)
  if tokens < cost then return 'bytes:' .. math.ceil((cost - tokens) * 1000 / rate) end
  redis.call('HSET', bucket, 't', tostring(tokens - cost), 's', ms(now))
  redis.call('PEXPIRE', bucket, math.ceil(burst * 1000 / rate) + 1000)
end
local rooms = '{TENANT_ROOMS_PREFIX}' .. tenant
if most > 0 then
  redis.call('ZREMRANGEBYSCORE', rooms, '-inf', ms(now))
  local new = 0
  for i = 0, events - 1 do
    local at = 6 + i * 5
    if tonumber(ARGV[at + 3]) > 0 and not redis.call('ZSCORE', rooms, ARGV[at]) then
      new = new + 1
    end
  end
  if new > 0 and redis.call('ZCARD', rooms) + new > most then return 'rooms' end
end
local ids = {{}}
for i = 0, events - 1 do
  local at = 6 + i * 5
  local size, ttl = tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  ids[i + 1] = append_and_publish(ARGV[at], ARGV[at + 1], ARGV[at + 2], size, ttl, ARGV[1], now)
  if most > 0 and size > 0 then
    redis.call('ZADD', rooms, ms(now + ttl), ARGV[at])
    if redis.call('PTTL', rooms) < ttl then redis.call('PEXPIRE', rooms, ttl) end
  end
end
return ids
"""
)

HISTORY = f"""
local stream, meta = '{STREAM_PREFIX}' .. ARGV[1], '{META_PREFIX}' .. ARGV[1]
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', meta, 'e', epoch)
  redis.call('PEXPIRE', meta, ARGV[5])
end
local trimmed = redis.call('HGET', meta, 't') or '0-0'
local newest = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
local last = false
if #newest > 0 then last = newest[1][1] end
local events = {{}}
local limit = tonumber(ARGV[4])
if limit > 0 then
  local from = '-'
  if ARGV[3] ~= '' then from = '(' .. ARGV[3] end
  for _, entry in ipairs(redis.call('XRANGE', stream, from, '+', 'COUNT', limit)) do
    events[#events + 1] = entry[2][2] .. entry[1]
  end
end
return {{epoch, trimmed, last, events}}
"""
