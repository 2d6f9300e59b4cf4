#!lua name=roomcast
-- The roomcast library of Redis Functions (Redis 7+): a room event is
-- sequenced, stored in the room's history and published in one atomic
-- step, so every node of a cluster sees the same order. Loaded by every
-- node with FUNCTION LOAD REPLACE; docs/redis.md documents the calls.
--
-- Keys of a room (all with the room name as hash tag, src/redis/layout.rs):
--   KEYS[1] <prefix>:{room}:seq    the last seq given out
--   KEYS[2] <prefix>:{room}:epoch  the current epoch
--   KEYS[3] <prefix>:{room}:log    the history, a stream with ids 0-<seq>
-- The pub/sub channel <prefix>:{room} carries "<epoch> <seq> <origin> <message>",
-- where <origin> is what the publishing node passed ('-' from the emitter).

-- Sequences `head .. seq .. tail` (the message text around its seq) and
-- returns {seq, epoch}.
local function sequence(keys, head, tail, fresh_epoch, history, ttl_ms, origin, channel)
  local epoch = redis.call('GET', keys[2])
  if not epoch then
    -- A new room, or one forgotten (expired, or lost with the data): a new
    -- epoch starts at seq 1.
    epoch = fresh_epoch
    redis.call('DEL', keys[1], keys[3])
    redis.call('SET', keys[2], epoch)
  end
  local seq = redis.call('INCR', keys[1])
  local message = head .. seq .. tail
  if history > 0 then
    redis.call('XADD', keys[3], 'MAXLEN', history, '0-' .. seq, 'm', message)
  end
  if ttl_ms > 0 then
    for _, key in ipairs(keys) do
      redis.call('PEXPIRE', key, ttl_ms)
    end
  end
  redis.call('PUBLISH', channel, epoch .. ' ' .. seq .. ' ' .. origin .. ' ' .. message)
  return {seq, epoch}
end

-- Used by roomcast nodes, which build the message text themselves.
-- ARGV: head, tail, fresh epoch, history length, history TTL (ms), origin,
-- channel.
local function publish(keys, args)
  return sequence(keys, args[1], args[2], args[3], tonumber(args[4]), tonumber(args[5]),
    args[6], args[7])
end

-- The emitter: any backend publishes a room event without a roomcast node.
-- ARGV: room, event, data (JSON text, forwarded verbatim), from,
--       history length, history TTL (ms), channel.
local function emit(keys, args)
  if not pcall(cjson.decode, args[3]) then
    return redis.error_reply('INVALID_MESSAGE data is not valid JSON')
  end
  local time = redis.call('TIME')
  local ts = tostring(time[1] * 1000 + math.floor(time[2] / 1000))
  local head = '{"event":' .. cjson.encode(args[2]) .. ',"room":' .. cjson.encode(args[1])
    .. ',"data":' .. args[3] .. ',"from":' .. cjson.encode(args[4]) .. ',"seq":'
  local tail = ',"ts":' .. ts .. '}'
  local fresh_epoch = 'r' .. time[1] .. time[2]
  return sequence(keys, head, tail, fresh_epoch, tonumber(args[5]), tonumber(args[6]), '-',
    args[7])
end

-- The latest `n` messages of a history, oldest first.
local function latest(log, n)
  if n <= 0 then
    return {}
  end
  local entries = redis.call('XREVRANGE', log, '+', '-', 'COUNT', n)
  local messages = {}
  for i = #entries, 1, -1 do
    messages[#messages + 1] = entries[i][2][2]
  end
  return messages
end

-- The seq of the oldest message kept, or nil.
local function oldest(log)
  local first = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1]
  if not first then
    return nil
  end
  return tonumber(string.match(first[1], '^0%-(%d+)$'))
end

-- What `room:join` gets back (docs/protocol.md section 7), the same on every
-- node: {epoch, seq, recovered (-1: not asked, 0, 1), {messages...}}.
-- ARGV: history k, since, epoch (each '' when absent), a fresh epoch for a
-- room that has none, the history TTL (ms).
local function history(keys, args)
  local k = tonumber(args[1])
  local since = tonumber(args[2])
  local asked_epoch = args[3]
  local epoch = redis.call('GET', keys[2])
  if not epoch then
    epoch = args[4]
    redis.call('DEL', keys[1], keys[3])
    redis.call('SET', keys[2], epoch)
    local ttl_ms = tonumber(args[5])
    if ttl_ms > 0 then
      redis.call('PEXPIRE', keys[2], ttl_ms)
    end
  end
  local seq = tonumber(redis.call('GET', keys[1]) or '0')
  if not since then
    return {epoch, seq, -1, latest(keys[3], k or 0)}
  end
  local first = oldest(keys[3])
  local covered = since == seq or (since < seq and first ~= nil and first <= since + 1)
  if asked_epoch == epoch and covered then
    local entries = redis.call('XRANGE', keys[3], '(0-' .. since, '+')
    local messages = {}
    for i = 1, #entries do
      messages[i] = entries[i][2][2]
    end
    return {epoch, seq, 1, messages}
  end
  return {epoch, seq, 0, latest(keys[3], k or seq)}
end

redis.register_function('roomcast_publish', publish)
redis.register_function('roomcast_history', history)
redis.register_function('roomcast_emit', emit)
