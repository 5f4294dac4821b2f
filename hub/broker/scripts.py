"""Lua scripts that make history and pub/sub one atomic step in Redis.

Each room has a stream `hub:h:<key>` (entries hold the event's bytes up to its id) and a
hash `hub:m:<key>`: `e` the epoch, `t` the newest id retention dropped. The epoch is made
when the hash is missing, so a Redis that lost its data hands out a new epoch.

`LIBRARY` holds the Lua functions other scripts (presence) build on, so that every event
the hub publishes, whoever publishes it, goes through the same append-and-publish step.
"""

from __future__ import annotations

from hub.history import ID_END, ID_FIELD

CHANNEL_PREFIX = "hub:room:"
STREAM_PREFIX = "hub:h:"
META_PREFIX = "hub:m:"

LIBRARY = f"""
local CHANNEL, STREAM, META = '{CHANNEL_PREFIX}', '{STREAM_PREFIX}', '{META_PREFIX}'
local ID_FIELD, ID_END = [[{ID_FIELD.decode()}]], [[{ID_END.decode()}]]

local function now_ms()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end

-- Append one event to room `key`'s history and publish `prefix .. id .. suffix` (or
-- `prefix .. suffix` when the room keeps no history); returns the id, or false.
local function append_and_publish(key, prefix, suffix, size, ttl_ms, epoch, now)
  if size <= 0 then
    redis.call('PUBLISH', CHANNEL .. key, prefix .. suffix)
    return false
  end
  local stream, meta = STREAM .. key, META .. key
  redis.call('HSETNX', meta, 'e', epoch)
  local length = redis.call('XLEN', stream)
  if length >= size then
    local gone = redis.call('XRANGE', stream, '-', '+', 'COUNT', length - size + 1)
    redis.call('HSET', meta, 't', gone[#gone][1])
    redis.call('XTRIM', stream, 'MAXLEN', size - 1)
  end
  local min_id = tostring(now - ttl_ms) .. '-0'
  local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  if #oldest > 0 and tonumber(string.match(oldest[1][1], '^(%d+)')) < now - ttl_ms then
    local gone = redis.call('XREVRANGE', stream, '(' .. min_id, '-', 'COUNT', 1)
    redis.call('HSET', meta, 't', gone[1][1])
    redis.call('XTRIM', stream, 'MINID', min_id)
  end
  local id = redis.call('XADD', stream, '*', 'p', prefix)
  redis.call('PUBLISH', CHANNEL .. key, prefix .. id .. suffix)
  redis.call('PEXPIRE', stream, ttl_ms)
  redis.call('PEXPIRE', meta, ttl_ms)
  return id
end
"""

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
