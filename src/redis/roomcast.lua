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
-- and, for presence (the functions that take seven keys):
--   KEYS[4] <prefix>:{room}:users    hash: user -> connections in the cluster
--   KEYS[5] <prefix>:{room}:names    hash: user -> display name
--   KEYS[6] <prefix>:{room}:nodes    hash: <node>/<user> -> that node's connections
--   KEYS[7] <prefix>:{room}:members  connections in the cluster
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
local function read_history(keys, args)
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

local function history(keys, args)
  return read_history(keys, args)
end

-- Presence. A presence event goes on the room's channel as
-- "- 0 <origin> <event>": no epoch, no seq, never in the history.
local function announce(channel, origin, text)
  redis.call('PUBLISH', channel, '- 0 ' .. origin .. ' ' .. text)
end

-- Adds `n` (1 or -1, or any count) connections of `user` from `node`;
-- returns the user's connections in the cluster after it, or nil when a
-- removal finds nothing of that node's to remove.
local function count_in(keys, node, user, n)
  local own = redis.call('HINCRBY', keys[6], node .. '/' .. user, n)
  if own < 0 or (n < 0 and own - n <= 0) then
    redis.call('HINCRBY', keys[6], node .. '/' .. user, -n)
    return nil
  end
  if own == 0 then
    redis.call('HDEL', keys[6], node .. '/' .. user)
  end
  local total = redis.call('HINCRBY', keys[4], user, n)
  redis.call('INCRBY', keys[7], n)
  if total <= 0 then
    redis.call('HDEL', keys[4], user)
    redis.call('HDEL', keys[5], user)
  end
  return total
end

local function members(keys)
  local count = tonumber(redis.call('GET', keys[7]) or '0')
  if count <= 0 then
    redis.call('DEL', keys[7])
    return 0
  end
  return count
end

-- A join: the history as roomcast_history answers it, and (unless the
-- connection is already in the room) the connection counted in, with a
-- presence:join for the user's first connection in the cluster.
-- ARGV 1-5 as roomcast_history, then: node, user, name ('' for none),
-- has name (0/1), rejoin (0/1), announce (0/1), event limit, channel,
-- origin, the presence:join text.
-- Returns {epoch, seq, recovered, {messages...}, members}.
local function join(keys, args)
  local reply = read_history(keys, args)
  if args[10] ~= '1' then
    local user = args[7]
    if args[9] == '1' then
      redis.call('HSET', keys[5], user, args[8])
    end
    local total = count_in(keys, args[6], user, 1)
    local room_total = members(keys)
    if total == 1 and args[11] == '1' and room_total <= tonumber(args[12]) then
      announce(args[13], args[14], args[15])
    end
  end
  reply[5] = members(keys)
  return reply
end

-- A connection of `user` on `node` left: counted out, with a
-- presence:leave for the user's last connection in the cluster.
-- KEYS: users, names, nodes, members (4-7 of a join's).
-- ARGV: node, user, announce (0/1), event limit, channel, origin, the
-- presence:leave text. Returns the room's connections.
local function leave(keys, args)
  local k = {nil, nil, nil, keys[1], keys[2], keys[3], keys[4]}
  local before = members(k)
  local total = count_in(k, args[1], args[2], -1)
  if total == 0 and args[3] == '1' and before <= tonumber(args[4]) then
    announce(args[5], args[6], args[7])
  end
  return members(k)
end

-- presence:get. KEYS: users, names, members. ARGV: most users listed.
-- Returns {users, connections, {user, name or false, connections}...}.
local function presence(keys, args)
  local limit = tonumber(args[1])
  local all = redis.call('HGETALL', keys[1])
  local listed = {}
  for i = 1, #all, 2 do
    if #listed >= limit * 3 then
      break
    end
    local name = redis.call('HGET', keys[2], all[i])
    listed[#listed + 1] = all[i]
    listed[#listed + 1] = name
    listed[#listed + 1] = tonumber(all[i + 1])
  end
  return {#all / 2, tonumber(redis.call('GET', keys[3]) or '0'), listed}
end

-- The presence:leave text of `user` in `room`, as a node writes it.
local function leave_text(room, user)
  return '{"event":"presence:leave","room":' .. cjson.encode(room)
    .. ',"data":{"userId":' .. cjson.encode(user) .. '}}'
end

-- Sets what `node` has in the room to exactly the pairs given (user,
-- connections, name or '' ...): after a node lost Redis for a while (its
-- entries may have been reaped, or Redis lost them), or with an empty list
-- for a node that died (every entry removed, leaves announced).
-- KEYS: users, names, nodes, members. ARGV: node, room, announce (0/1),
-- event limit, channel, then triples user, connections, name ('' none).
-- Returns the room's connections.
local function sync(keys, args)
  local k = {nil, nil, nil, keys[1], keys[2], keys[3], keys[4]}
  local node, room = args[1], args[2]
  local can_announce = args[3] == '1'
  local limit = tonumber(args[4])
  local channel = args[5]
  local wanted = {}
  for i = 6, #args, 3 do
    wanted[args[i]] = {tonumber(args[i + 1]), args[i + 2]}
  end
  local own = redis.call('HGETALL', keys[3])
  local prefix = node .. '/'
  for i = 1, #own, 2 do
    if string.sub(own[i], 1, #prefix) == prefix then
      local user = string.sub(own[i], #prefix + 1)
      local have = tonumber(own[i + 1])
      local want = wanted[user] and wanted[user][1] or 0
      if want < have then
        local before = members(k)
        local total = count_in(k, node, user, want - have)
        if total == 0 and can_announce and before <= limit then
          announce(channel, '-', leave_text(room, user))
        end
      end
      if wanted[user] then
        wanted[user][1] = want - math.min(want, have)
      end
    end
  end
  for user, entry in pairs(wanted) do
    if entry[1] > 0 then
      if entry[2] ~= '' then
        redis.call('HSET', keys[2], user, entry[2])
      end
      local total = count_in(k, node, user, entry[1])
      if total == entry[1] and can_announce and members(k) <= limit then
        local name = redis.call('HGET', keys[2], user)
        announce(channel, '-', '{"event":"presence:join","room":' .. cjson.encode(room)
          .. ',"data":{"userId":' .. cjson.encode(user) .. ',"name":'
          .. (name and cjson.encode(name) or 'null') .. '}}')
      end
    end
  end
  return members(k)
end

-- Counts `n` connections of `user` on `node` in (or out, n < 0): the online
-- set (the pseudo-room '') that user:send and system:broadcast count.
-- KEYS: users, names, nodes, members. ARGV: node, user, n.
-- Returns the connections counted.
local function count(keys, args)
  local k = {nil, nil, nil, keys[1], keys[2], keys[3], keys[4]}
  count_in(k, args[1], args[2], tonumber(args[3]))
  return members(k)
end

-- user:send (to a user) or system:broadcast (to '' : everyone): published
-- once on the direct channel for every node to deliver to its own
-- connections. KEYS: users, members (of the online set).
-- ARGV: to, channel, payload. Returns the connections it is for.
local function send(keys, args)
  local n
  if args[1] == '' then
    n = redis.call('GET', keys[2])
  else
    n = redis.call('HGET', keys[1], args[1])
  end
  redis.call('PUBLISH', args[2], args[3])
  return tonumber(n or '0')
end

redis.register_function('roomcast_publish', publish)
redis.register_function('roomcast_count', count)
redis.register_function('roomcast_send', send)
redis.register_function('roomcast_history', history)
redis.register_function('roomcast_join', join)
redis.register_function('roomcast_leave', leave)
redis.register_function('roomcast_presence', presence)
redis.register_function('roomcast_sync', sync)
redis.register_function('roomcast_emit', emit)
