"""Lua scripts that make history and pub/sub one atomic step in Redis.

Every key of a tenant carries the tenant as its hash tag (`{<tenant>}`, see
`hub.rooms.RoomKey.name`), so each script call touches one slot and a Redis Cluster can
run it: a broadcast to several rooms of a tenant stays one atomic step, and tenants spread
over the shards. A script is called with one key, of the slot it works in, for routing.

Each room has a stream `hub:h:<key>` (entries hold the event's bytes up to its id) and a
hash `hub:m:<key>`: `e` the epoch, `t` the newest id retention dropped. Both are written
only by publishes: a read of a room without history creates nothing.

Every room's epoch is the one its tenant's `hub:epoch:{<tenant>}` holds, made once and
lost with the data, so a Redis (or a shard) that lost its data hands out a new epoch and
a room keeps its epoch from the first subscribe through its first publish.

Room events go out with `PUBLISH` on one Redis, `SPUBLISH` on a cluster
(`hub.redis.scripts.dialect`): a room's channel carries its tenant's tag, so it lives on
the shard that holds the room.

`LIBRARY` holds the Lua functions other scripts (presence) build on, so that every event
the hub publishes, whoever publishes it, goes through the same append-and-publish step.
"""

from __future__ import annotations

from hub.envelope import LUA as ENVELOPE

CHANNEL_PREFIX = "hub:room:"
STREAM_PREFIX = "hub:h:"
META_PREFIX = "hub:m:"
EPOCH_PREFIX = "hub:epoch:"
STATE_PREFIX = "hub:st:"
"""`hub:st:<key>`: a hash of the room's state, event name to the newest such event's bytes."""
TENANT_BYTES_PREFIX = "hub:tb:"
"""`hub:tb:{<tenant>}`: a tenant's published-bytes bucket."""
TENANT_ROOMS_PREFIX = "hub:tr:"
"""`hub:tr:{<tenant>}`: a tenant's rooms with history, scored by when their history expires."""
RECEIPTS_PREFIX = "hub:rc:"
"""`hub:rc:<key>:<id>`: a hash of one event's latest receipt of each principal
(`<role> <sub>`), kept as long as the event: until its id's time plus the room's TTL."""
IDEMPOTENCY_PREFIX = "hub:idem:"
"""`hub:idem:{<tenant>}:<key>`: a hash of what answered the publish that claimed the key,
`d` its body's digest, `t` its ts, `i` its ids joined by `,` (empty for a room without
history), `r` its reach joined by `,`."""
ROOM_PREFIX = "hub:pr:"
"""`hub:pr:<key>`: presence's hash of a room's members across the cluster (see
`hub.presence.scripts`); a publish counts it as the event's reach."""
REPLAY = "replay"
CONFLICT = "conflict"

_BASE = f"""
local CHANNEL, STREAM, META = '{CHANNEL_PREFIX}', '{STREAM_PREFIX}', '{META_PREFIX}'
local STATE, RECEIPTS = '{STATE_PREFIX}', '{RECEIPTS_PREFIX}'

local function ms(number)
  return string.format('%.0f', number)
end

local function now_ms()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end

-- `{{<tenant>}}`: the hash tag of every key of the tenant.
local function tag(tenant)
  return '{{' .. tenant .. '}}'
end

-- The epoch of every history of room `key`'s tenant, made from `fresh` if the data was lost.
local function current_epoch(key, fresh)
  local epochs = '{EPOCH_PREFIX}' .. string.match(key, '^{{[^}}]*}}')
  local epoch = redis.call('GET', epochs)
  if not epoch then
    epoch = fresh
    redis.call('SET', epochs, epoch)
  end
  return epoch
end
"""

LIBRARY = (
    ENVELOPE
    + _BASE
    + """
-- The publisher's trace context, published in front of its events (hub/envelope.py's
-- `traced`) and nowhere else; '' while tracing is off.
local TRACE = ''

-- Publish `prefix .. id .. suffix` to room `key` after appending it to the room's history
-- (`prefix .. suffix` when the room keeps no history); returns the id, or false. Each room
-- appended to must then be settled once, before the script ends.
local function append(key, prefix, suffix, size)
  if size <= 0 then
    redis.call('PUBLISH', CHANNEL .. key, TRACE .. prefix .. suffix)
    return false
  end
  local id = redis.call('XADD', STREAM .. key, '*', 'p', prefix)
  redis.call('PUBLISH', CHANNEL .. key, TRACE .. prefix .. id .. suffix)
  return id
end

-- Keep room `key`'s history within `size` events and `ttl_ms`, remembering the newest id
-- dropped (`t`); a new history gets the epoch (made from `fresh` if needed).
local function settle(key, size, ttl_ms, fresh, now)
  if size <= 0 then return end
  local stream, meta = STREAM .. key, META .. key
  if redis.call('EXISTS', meta) == 0 then
    redis.call('HSET', meta, 'e', current_epoch(key, fresh), 't', '0-0')
  end
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
-- ARGV: epoch, tenant, bytes/s, burst, rooms with history (0 = no bound), the claim ('' for
-- none, else '<ttl ms> <ts> <digest> <key>'), state ttl (ms), the trace context ('' for
-- none), then per event: room key, prefix, suffix, history size, history ttl (ms), its name
-- when it is state ('' if not).
-- Returns the ids then each room's reach (its members as presence knows them), or,
-- publishing nothing, 'bytes:<ms to wait>' or 'rooms' when a tenant bound refuses,
-- '{CONFLICT}' when the key was claimed with another digest, '{REPLAY} <ts> <ids> <reach>'
-- when with this one. A room keeping state counts as one with history.
local now = now_ms()
local tenant, rate, burst, most = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local state_ttl = tonumber(ARGV[7])
TRACE = ARGV[8]
local claim, digest, ts, claim_ttl = false, false, false, false
if ARGV[6] ~= '' then
  local key
  claim_ttl, ts, digest, key = string.match(ARGV[6], '^(%d+) (%d+) (%x+) (.+)$')
  claim = '{IDEMPOTENCY_PREFIX}' .. tag(tenant) .. ':' .. key
  local seen = redis.call('HMGET', claim, 'd', 't', 'i', 'r')
  if seen[1] then
    if seen[1] ~= digest then return '{CONFLICT}' end
    return '{REPLAY} ' .. seen[2] .. ' ' .. seen[3] .. ' ' .. (seen[4] or '')
  end
end
local events = (#ARGV - 8) / 6
local function kept_for(at)
  local span = 0
  if tonumber(ARGV[at + 3]) > 0 then span = tonumber(ARGV[at + 4]) end
  if ARGV[at + 5] ~= '' then span = math.max(span, state_ttl) end
  return span
end
if rate > 0 then
  local cost = 0
  for i = 0, events - 1 do cost = cost + #ARGV[10 + i * 6] + #ARGV[11 + i * 6] end
  local bucket = '{TENANT_BYTES_PREFIX}' .. tag(tenant)
  local state = redis.call('HMGET', bucket, 't', 's')
  local tokens, stamp = tonumber(state[1]) or burst, tonumber(state[2]) or now
  tokens = math.min(burst, tokens + (now - stamp) * rate / 1000)
  if tokens < cost then return 'bytes:' .. math.ceil((cost - tokens) * 1000 / rate) end
  redis.call('HSET', bucket, 't', tostring(tokens - cost), 's', ms(now))
  redis.call('PEXPIRE', bucket, math.ceil(burst * 1000 / rate) + 1000)
end
local rooms = '{TENANT_ROOMS_PREFIX}' .. tag(tenant)
if most > 0 then
  redis.call('ZREMRANGEBYSCORE', rooms, '-inf', ms(now))
  local new = 0
  for i = 0, events - 1 do
    local at = 9 + i * 6
    if kept_for(at) > 0 and not redis.call('ZSCORE', rooms, ARGV[at]) then
      new = new + 1
    end
  end
  if new > 0 and redis.call('ZCARD', rooms) + new > most then return 'rooms' end
end
local ids = {{}}
for i = 0, events - 1 do
  local at = 9 + i * 6
  local key, prefix, suffix = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local size, ttl = tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  local id = append_and_publish(key, prefix, suffix, size, ttl, ARGV[1], now)
  ids[i + 1] = id
  if ARGV[at + 5] ~= '' then
    redis.call('HSET', STATE .. key, ARGV[at + 5], prefix .. (id or '') .. suffix)
    redis.call('PEXPIRE', STATE .. key, state_ttl)
  end
  local span = kept_for(at)
  if most > 0 and span > 0 then
    redis.call('ZADD', rooms, ms(now + span), key)
    if redis.call('PTTL', rooms) < span then redis.call('PEXPIRE', rooms, span) end
  end
end
local reach = {{}}
for i = 0, events - 1 do reach[i + 1] = redis.call('HLEN', '{ROOM_PREFIX}' .. ARGV[9 + i * 6]) end
if claim then
  local answer = {{}}
  for i = 1, events do answer[i] = ids[i] or '' end
  redis.call('HSET', claim, 'd', digest, 't', ts, 'i', table.concat(answer, ','),
    'r', table.concat(reach, ','))
  redis.call('PEXPIRE', claim, claim_ttl)
end
for i = 1, events do ids[events + i] = reach[i] end
return ids
"""
)

RECEIPT = (
    LIBRARY
    + """
-- ARGV: epoch, room key, event id, the room's history ttl (ms), principal, receipt record,
-- the status room's key, size and ttl (ms), the `delivery.receipt` prefix and suffix.
-- Stores the receipt and publishes it to `status` when the event is in the room's history:
-- returns 1, else 0 and does nothing.
local key, id = ARGV[2], ARGV[3]
if #redis.call('XRANGE', STREAM .. key, id, id) == 0 then return 0 end
local now = now_ms()
local receipts = RECEIPTS .. key .. ':' .. id
redis.call('HSET', receipts, ARGV[5], ARGV[6])
local expires = tonumber(string.match(id, '^(%d+)')) + tonumber(ARGV[4])
redis.call('PEXPIREAT', receipts, ms(math.max(expires, now + 1)))
local size, ttl = tonumber(ARGV[8]), tonumber(ARGV[9])
append_and_publish(ARGV[7], ARGV[10], ARGV[11], size, ttl, ARGV[1], now)
return 1
"""
)

HISTORY = (
    _BASE
    + """
-- ARGV: room key, a fresh epoch, since ('' for the oldest), limit, '1' for the room's state
-- too, the room's history TTL (ms). Writes nothing but the epoch itself, when the data was
-- lost. Events past the TTL are not history, trimmed or not yet (a publish trims them):
-- they are not returned, and count as trimmed. `held` is 1 when `since` is an id the
-- history still holds.
local stream, meta = STREAM .. ARGV[1], META .. ARGV[1]
local state = redis.call('HMGET', meta, 'e', 't')
local epoch, trimmed = state[1] or current_epoch(ARGV[1], ARGV[2]), state[2] or '0-0'
local oldest_kept = now_ms() - tonumber(ARGV[6])
local min_id = ms(oldest_kept) .. '-0'
local aged = redis.call('XREVRANGE', stream, '(' .. min_id, '-', 'COUNT', 1)
if #aged > 0 then trimmed = aged[1][1] end
local newest = redis.call('XREVRANGE', stream, '+', min_id, 'COUNT', 1)
local last = false
if #newest > 0 then last = newest[1][1] end
local since = ARGV[3]
local current = since ~= '' and tonumber(string.match(since, '^(%d+)')) >= oldest_kept
local events = {}
local limit = tonumber(ARGV[4])
if limit > 0 then
  local from = min_id
  if current then from = '(' .. since end
  for _, entry in ipairs(redis.call('XRANGE', stream, from, '+', 'COUNT', limit)) do
    events[#events + 1] = entry[2][2] .. entry[1]
  end
end
local kept = {}
if ARGV[5] == '1' then kept = redis.call('HVALS', STATE .. ARGV[1]) end
local held = 0
if current and #redis.call('XRANGE', stream, since, since) > 0 then held = 1 end
return {epoch, trimmed, last, events, kept, held}
"""
)
