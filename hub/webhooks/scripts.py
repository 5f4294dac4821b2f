"""The Redis keys of webhooks and the Lua scripts that change them, each in one atomic step.

Every key of a tenant carries its hash tag (`{t}`), as its `status` room's history stream
does, so each script touches one slot and a Redis Cluster runs it; a script's one key is the
tenant's tag, for routing.

| key | type | holds |
|---|---|---|
| `hub:wh:tenants` | set | the tenants that have endpoints |
| `hub:wh:{t}:e` | hash | endpoint id to its JSON (`Endpoint.as_json` and the sealed `secret`) |
| `hub:wh:{t}:lease` | string | the run of the node that delivers the tenant's messages (PX) |
| `hub:wh:{t}:dirty` | string | set when endpoints or messages change outside a read |
| `hub:wh:{t}:n` | string | the last `seq` handed out |
| `hub:wh:{t}:off` | hash | device to `<ms> <webhook id>` of its offline not followed by an online |
| `hub:wh:{t}:offt` | sorted set | the same devices, by offline time, to forget the old ones |
| `hub:wh:{t}:d:<id>` | hash | webhook id to the endpoint's delivery record (`Delivery.record`) |
| `hub:wh:{t}:b:<id>` | hash | webhook id to the message's body |
| `hub:wh:{t}:q:<id>` | sorted set | the endpoint's pending messages, by `seq` |
| `hub:wh:{t}:f:<id>` | sorted set | its newest finished ones, by `seq` (`KEEP_FINISHED`) |
| `hub:h:{t}:status` | stream | the `status` room's history, read by consumer group `hub-webhooks` |
"""

from __future__ import annotations

from hub.auth import STATUS_ROOM
from hub.broker.scripts import STREAM_PREFIX
from hub.rooms import RoomKey, tag
from hub.webhooks.model import OFFLINE, ONLINE, RECEIPT
from hub.webhooks.store import KEEP_FINISHED

TENANTS = "hub:wh:tenants"
GROUP = "hub-webhooks"


def base(tenant: str) -> str:
    """What every webhook key of the tenant starts with."""
    return f"hub:wh:{tag(tenant)}:"


def status_stream(tenant: str) -> str:
    """The tenant's `status` room history: where its messages come from."""
    return STREAM_PREFIX + RoomKey(tenant, STATUS_ROOM).name


_LIBRARY = f"""
local GROUP, KEEP = '{GROUP}', {KEEP_FINISHED}

local function base(tenant)
  return 'hub:wh:{{' .. tenant .. '}}:'
end

-- Keep `record` for message `wid` of endpoint `id` and move it to the endpoint's log,
-- which keeps the newest KEEP.
local function finish(b, id, wid, record)
  local q, f = b .. 'q:' .. id, b .. 'f:' .. id
  redis.call('HSET', b .. 'd:' .. id, wid, record)
  local seq = redis.call('ZSCORE', q, wid)
  if seq then
    redis.call('ZREM', q, wid)
    redis.call('ZADD', f, seq, wid)
  end
  local excess = redis.call('ZCARD', f) - KEEP
  if excess > 0 then
    local old = redis.call('ZRANGE', f, 0, excess - 1)
    redis.call('ZREMRANGEBYRANK', f, 0, excess - 1)
    redis.call('HDEL', b .. 'd:' .. id, unpack(old))
    redis.call('HDEL', b .. 'b:' .. id, unpack(old))
  end
end
"""

ADD = (
    _LIBRARY
    + """
-- ARGV: tenant, endpoint id, its JSON, most endpoints, the status stream.
-- Returns 0, adding nothing, when the tenant has `most`; else 1. The first endpoint reads
-- the stream from its end: only events from now on become messages.
local b = base(ARGV[1])
local endpoints = b .. 'e'
if redis.call('HLEN', endpoints) >= tonumber(ARGV[4]) then return 0 end
redis.call('HSET', endpoints, ARGV[2], ARGV[3])
if redis.call('HLEN', endpoints) == 1 then
  local made = redis.pcall('XGROUP', 'CREATE', ARGV[5], GROUP, '$', 'MKSTREAM')
  if type(made) == 'table' and made.err then
    redis.call('XGROUP', 'SETID', ARGV[5], GROUP, '$')
  end
end
redis.call('SET', b .. 'dirty', '1')
return 1
"""
)

REMOVE = (
    _LIBRARY
    + """
-- ARGV: tenant, endpoint id, the status stream.
-- Returns -1 when there is no such endpoint, else the endpoints left. The last one takes
-- the consumer group with it.
local b, id = base(ARGV[1]), ARGV[2]
if redis.call('HDEL', b .. 'e', id) == 0 then return -1 end
redis.call('UNLINK', b .. 'd:' .. id, b .. 'b:' .. id, b .. 'q:' .. id, b .. 'f:' .. id)
local left = redis.call('HLEN', b .. 'e')
if left == 0 then
  redis.pcall('XGROUP', 'DESTROY', ARGV[3], GROUP)
  redis.call('UNLINK', b .. 'off', b .. 'offt', b .. 'n', b .. 'dirty')
else
  redis.call('SET', b .. 'dirty', '1')
end
return left
"""
)

RETRY = (
    _LIBRARY
    + """
-- ARGV: tenant, endpoint id, webhook id, now (ms).
-- Makes the message pending again, due now, its attempts kept; 0 when there is none.
local b, id, wid = base(ARGV[1]), ARGV[2], ARGV[3]
local d = b .. 'd:' .. id
local kept = redis.call('HGET', d, wid)
if not kept then return 0 end
local record = cjson.decode(kept)
record.state = 'pending'
record.next = tonumber(ARGV[4])
redis.call('HSET', d, wid, cjson.encode(record))
local seq = redis.call('ZSCORE', b .. 'f:' .. id, wid)
if seq then
  redis.call('ZREM', b .. 'f:' .. id, wid)
  redis.call('ZADD', b .. 'q:' .. id, seq, wid)
end
redis.call('SET', b .. 'dirty', '1')
return 1
"""
)

_NAMES = f"""
local ONLINE, OFFLINE, RECEIPT = '"{ONLINE}"', '"{OFFLINE}"', '"{RECEIPT}"'
"""
"""The names of the events webhooks carry, quoted as in an event's bytes."""

READ = (
    _LIBRARY
    + _NAMES
    + """
-- ARGV: tenant, the reader (the lease holder's run), the status stream, most entries.
-- Returns {0} when the reader no longer holds the lease, {2} when the tenant has no
-- endpoint, else {1, dirty (1 or 0), entries}: first what earlier readers took and did not
-- acknowledge (a node that died), then new ones, in stream order, each as its id and its
-- `p`, '' for one that cannot be a webhook's (a heartbeat: most of them). A stream that
-- expired or was deleted lost its group: the new one is read from its start.
local b, reader = base(ARGV[1]), ARGV[2]
if redis.call('GET', b .. 'lease') ~= reader then return {0} end
if redis.call('HLEN', b .. 'e') == 0 then return {2} end
local dirty = 0
if redis.call('GETDEL', b .. 'dirty') then dirty = 1 end
local stream, most = ARGV[3], tonumber(ARGV[4])
local claimed = redis.pcall('XAUTOCLAIM', stream, GROUP, reader, 0, '0-0', 'COUNT', most)
if claimed.err then
  if not string.find(claimed.err, 'NOGROUP', 1, true) then return claimed end
  redis.call('XGROUP', 'CREATE', stream, GROUP, '0', 'MKSTREAM')
  claimed = {'0-0', {}, {}}
end
if claimed[3] and #claimed[3] > 0 then
  redis.call('XACK', stream, GROUP, unpack(claimed[3]))
end
local entries = {}
local function take(entry)
  local p = entry[2] and entry[2][2] or ''
  if not (string.find(p, ONLINE, 1, true) or string.find(p, OFFLINE, 1, true)
      or string.find(p, RECEIPT, 1, true)) then
    p = ''
  end
  entries[#entries + 1] = entry[1]
  entries[#entries + 1] = p
end
for _, entry in ipairs(claimed[2]) do take(entry) end
if claimed[1] == '0-0' and #claimed[2] < most then
  local read = redis.call(
    'XREADGROUP', 'GROUP', GROUP, reader, 'COUNT', most - #claimed[2], 'STREAMS', stream, '>')
  if read then
    for _, entry in ipairs(read[1][2]) do take(entry) end
  end
end
return {1, dirty, entries}
"""
)

INGEST = (
    _LIBRARY
    + """
-- ARGV: tenant, the reader, the status stream, most pending per endpoint, the offline
-- grace (ms), the count of entry ids, the entry ids read, then six per message: webhook
-- id, type, device, time (ms), its first delivery record, its body.
-- Makes each message pending for the endpoints that hear about it and acknowledges the
-- entries, unless the reader lost the lease meanwhile: {0}. Else returns {1, added
-- (endpoint id, webhook id, seq)..., dropped (endpoint id, webhook id)..., failed (same)}.
local b, reader = base(ARGV[1]), ARGV[2]
if redis.call('GET', b .. 'lease') ~= reader then return {0} end
local stream, most, grace = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local acks = tonumber(ARGV[6])
local endpoints = {}
local listed = redis.call('HGETALL', b .. 'e')
for i = 1, #listed, 2 do
  local wants = {}
  for _, name in ipairs(cjson.decode(listed[i + 1]).events) do wants[name] = true end
  endpoints[#endpoints + 1] = {listed[i], wants}
end
local added, dropped, failed = {}, {}, {}

-- Whether endpoint `id` was sent the offline `wid`; one still unsent is taken back.
local function told(id, wid)
  local d = b .. 'd:' .. id
  local kept = redis.call('HGET', d, wid)
  if not kept then return false end
  local record = cjson.decode(kept)
  if record.state == 'pending' and record.attempts == 0 then
    redis.call('HDEL', d, wid)
    redis.call('HDEL', b .. 'b:' .. id, wid)
    redis.call('ZREM', b .. 'q:' .. id, wid)
    dropped[#dropped + 1] = id
    dropped[#dropped + 1] = wid
    return false
  end
  return true
end

local function add(id, wid, record, body)
  local d, q = b .. 'd:' .. id, b .. 'q:' .. id
  if redis.call('HEXISTS', d, wid) == 1 then return end
  local seq = redis.call('INCR', b .. 'n')
  redis.call('HSET', d, wid, record)
  redis.call('HSET', b .. 'b:' .. id, wid, body)
  redis.call('ZADD', q, seq, wid)
  added[#added + 1] = id
  added[#added + 1] = wid
  added[#added + 1] = seq
  if redis.call('ZCARD', q) > most then
    local oldest = redis.call('ZRANGE', q, 0, 0)[1]
    local kept = cjson.decode(redis.call('HGET', d, oldest))
    kept.state, kept.error, kept.next = 'failed', 'backlog over ' .. most, cjson.null
    finish(b, id, oldest, cjson.encode(kept))
    failed[#failed + 1] = id
    failed[#failed + 1] = oldest
  end
end

local latest = 0
for at = 7 + acks, #ARGV, 6 do
  local wid, kind, device, time = ARGV[at], ARGV[at + 1], ARGV[at + 2], tonumber(ARGV[at + 3])
  latest = math.max(latest, time)
  local back_from = false
  if kind == 'device.offline' then
    redis.call('HSET', b .. 'off', device, ARGV[at + 3] .. ' ' .. wid)
    redis.call('ZADD', b .. 'offt', ARGV[at + 3], device)
  elseif kind == 'device.online' then
    local seen = redis.call('HGET', b .. 'off', device)
    if seen then
      redis.call('HDEL', b .. 'off', device)
      redis.call('ZREM', b .. 'offt', device)
      local gone_at, offline = string.match(seen, '^(%d+) (.+)$')
      if time - tonumber(gone_at) <= grace then back_from = offline end
    end
  end
  for _, endpoint in ipairs(endpoints) do
    local id, wants = endpoint[1], endpoint[2]
    -- a device back within the grace: its online goes only where its offline went
    if not (back_from and not told(id, back_from)) and wants[kind] then
      add(id, wid, ARGV[at + 4], ARGV[at + 5])
    end
  end
end
local stale = redis.call(
  'ZRANGEBYSCORE', b .. 'offt', '-inf', string.format('(%.0f', latest - grace), 'LIMIT', 0, 100)
if #stale > 0 then
  redis.call('HDEL', b .. 'off', unpack(stale))
  redis.call('ZREM', b .. 'offt', unpack(stale))
end
if acks > 0 then
  redis.pcall('XACK', stream, GROUP, unpack(ARGV, 7, 6 + acks))
end
return {1, added, dropped, failed}
"""
)

SETTLE = (
    _LIBRARY
    + """
-- ARGV: tenant, endpoint id, webhook id, its record, its state.
-- Keeps what an attempt came to: a pending message's next attempt, or a finished one moved
-- to the log. Returns 0, doing nothing, when the endpoint no longer has the message (or, to
-- stay pending, no longer has it pending).
local b, id, wid = base(ARGV[1]), ARGV[2], ARGV[3]
local d = b .. 'd:' .. id
if redis.call('HEXISTS', d, wid) == 0 then return 0 end
if ARGV[5] == 'pending' then
  if not redis.call('ZSCORE', b .. 'q:' .. id, wid) then return 0 end
  redis.call('HSET', d, wid, ARGV[4])
else
  finish(b, id, wid, ARGV[4])
end
return 1
"""
)

RENEW = """
-- ARGV: the lease key, the holder, ttl (ms). 1 when the holder still held it.
if redis.call('GET', ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('PEXPIRE', ARGV[1], ARGV[3])
return 1
"""

RELEASE = """
-- ARGV: the lease key, the holder. Gives the lease up if the holder holds it.
if redis.call('GET', ARGV[1]) == ARGV[2] then redis.call('DEL', ARGV[1]) end
return 1
"""
