"""Lua scripts that make history and pub/sub one atomic step in Redis.

Each room has a stream `hub:h:<key>` (entries hold the event's bytes up to its id) and a
hash `hub:m:<key>`: `e` the epoch, `t` the newest id retention dropped. The epoch is made
when the hash is missing, so a Redis that lost its data hands out a new epoch.
"""

from __future__ import annotations

PUBLISH = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ids = {}
for i = 1, #KEYS / 2 do
  local stream, meta = KEYS[2 * i - 1], KEYS[2 * i]
  local at = 1 + (i - 1) * 5
  local channel, prefix, suffix = ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local size, ttl_ms = tonumber(ARGV[at + 4]), tonumber(ARGV[at + 5])
  if size <= 0 then
    redis.call('PUBLISH', channel, prefix .. suffix)
    ids[i] = false
  else
    redis.call('HSETNX', meta, 'e', ARGV[1])
    local length = redis.call('XLEN', stream)
    if length >= size then
      local gone = redis.call('XRANGE', stream, '-', '+', 'COUNT', length - size + 1)
      redis.call('HSET', meta, 't', gone[#gone][1])
      redis.call('XTRIM', stream, 'MAXLEN', size - 1)
    end
    local min_id = tostring(now_ms - ttl_ms) .. '-0'
    local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
    if #oldest > 0 and tonumber(string.match(oldest[1][1], '^(%d+)')) < now_ms - ttl_ms then
      local gone = redis.call('XREVRANGE', stream, '(' .. min_id, '-', 'COUNT', 1)
      redis.call('HSET', meta, 't', gone[1][1])
      redis.call('XTRIM', stream, 'MINID', min_id)
    end
    local id = redis.call('XADD', stream, '*', 'p', prefix)
    redis.call('PUBLISH', channel, prefix .. id .. suffix)
    redis.call('PEXPIRE', stream, ttl_ms)
    redis.call('PEXPIRE', meta, ttl_ms)
    ids[i] = id
  end
end
return ids
"""

HISTORY = """
local stream, meta = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', meta, 'e', epoch)
  redis.call('PEXPIRE', meta, ARGV[4])
end
local trimmed = redis.call('HGET', meta, 't') or '0-0'
local newest = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
local last = false
if #newest > 0 then last = newest[1][1] end
local events = {}
local limit = tonumber(ARGV[3])
if limit > 0 then
  local from = '-'
  if ARGV[2] ~= '' then from = '(' .. ARGV[2] end
  for _, entry in ipairs(redis.call('XRANGE', stream, from, '+', 'COUNT', limit)) do
    events[#events + 1] = entry[2][2] .. entry[1]
  end
end
return {epoch, trimmed, last, events}
"""
