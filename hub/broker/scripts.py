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
    + """
-- ARGV: epoch, then per event: room key, prefix, suffix, history size, history ttl (ms).
local now = now_ms()
local ids = {}
for i = 0, (#ARGV - 1) / 5 - 1 do
  local at = 2 + i * 5
  ids[i + 1] = append_and_publish(ARGV[at], ARGV[at + 1], ARGV[at + 2],
    tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4]), ARGV[1], now)
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
