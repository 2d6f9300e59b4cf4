#!lua name=roomcast
-- The roomcast library of Redis Functions (Redis 7+): a room event is
-- sequenced, stored in the room's history and published in one atomic
-- step, so every node of a cluster sees the same order. Loaded by every
-- node with FUNCTION LOAD REPLACE; docs/redis.md documents the calls.
--
-- Keys of a room (all with the room name as hash tag, src/redis/layout.rs),
-- numbered as the functions that take seven keys take them:
--   KEYS[1] <prefix>:{room}:seq      the last seq given out
--   KEYS[2] <prefix>:{room}:epoch    the current epoch
--   KEYS[3] <prefix>:{room}:log      the history, a stream with ids 0-<seq>
--                                    and fields m (the message), t (unix ms,
--                                    the publishing node's clock); trimmed
--                                    approximately: the history is only the
--                                    entries of the last --history seqs
--   KEYS[4] <prefix>:{room}:users    hash: user -> connections in the cluster
--   KEYS[5] <prefix>:{room}:names    hash: user -> display name
--   KEYS[6] <prefix>:{room}:nodes    hash: <node>/<user> -> that node's connections
--   KEYS[7] <prefix>:{room}:members  connections in the cluster
-- The sharded pub/sub channel <prefix>:{room} (SPUBLISH: in a Redis Cluster
-- it reaches only the shard of the room's slot) carries "<epoch> <seq> <origin> <message>",
-- where <origin> is what the publishing node passed ('-' from the emitter).
--
-- A room lives while it has members or history younger than the history
-- TTL (docs/protocol.md, Decisions: a room with neither is forgotten at
-- once, and the next join or message starts a new epoch at seq 1). So
-- seq, epoch and log never expire while members > 0, and expire with the
-- newest history entry once the last member is gone.

local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

-- Webhooks in a cluster (docs/protocol.md section 13.1). A node that has
-- webhooks on passes four arguments: this server's stream of webhook
-- events, the types wanted (a mask of TYPE_BITS), the stream's bound, and
-- the room. A transition the call makes (a room's first or last member, a
-- user's first or last connection in a room or in the cluster) is added
-- to the stream in the same atomic step as the counting, so the one node
-- that sends webhooks reads every transition of a room or user once, in
-- the order it happened. The entry id carries the Redis time. As on one
-- server, presence.* are those of rooms that announce presence.
local TYPE_BITS = {
  ['room.occupied'] = 1, ['room.vacated'] = 2, ['user.online'] = 4, ['user.offline'] = 8,
  ['presence.join'] = 16, ['presence.leave'] = 32, ['room.message'] = 64,
}

-- The webhook arguments starting at `args[from]`, or nil when off.
local function hooks_of(args, from)
  local mask = tonumber(args[from + 1] or '0') or 0
  if mask == 0 then
    return nil
  end
  return {key = args[from], mask = mask, maxlen = args[from + 2], room = args[from + 3]}
end

-- Adds an event of `kind` about the hooks' room (`with_room`) and `user`
-- (or none) to the stream, if that kind is wanted.
local function hook(w, kind, with_room, user, message)
  if w == nil or bit.band(w.mask, TYPE_BITS[kind]) == 0 then
    return
  end
  local fields = {'type', kind}
  if with_room then
    fields[#fields + 1] = 'room'
    fields[#fields + 1] = w.room
  end
  if user then
    fields[#fields + 1] = 'user'
    fields[#fields + 1] = user
  end
  if message then
    fields[#fields + 1] = 'm'
    fields[#fields + 1] = message
  end
  redis.call('XADD', w.key, 'MAXLEN', '~', w.maxlen, '*', unpack(fields))
end

-- The time (unix ms) of a history entry, or nil for one without.
local function entry_time(entry)
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 't' then
      return tonumber(fields[i + 1])
    end
  end
  return nil
end

local function fresh(entry, min_t)
  local t = entry_time(entry)
  return t == nil or t >= min_t
end

-- A room without members: its keys expire with its newest history entry,
-- or go now when it has none left (or keeps none).
-- keys: seq, epoch, log.
local function settle_empty(keys, ttl_ms)
  local newest = redis.call('XREVRANGE', keys[3], '+', '-', 'COUNT', 1)[1]
  local left = 0
  if newest then
    left = (entry_time(newest) or now_ms()) + ttl_ms - now_ms()
  end
  if left <= 0 then
    redis.call('DEL', keys[1], keys[2], keys[3])
  else
    for i = 1, 3 do
      redis.call('PEXPIRE', keys[i], left)
    end
  end
end

-- Whether a room has members anywhere in the cluster, from the text of
-- its members key (an integer that INCRBY wrote, or false when absent):
-- compared as text, which spares the per-message path a number parse.
local function occupied(count)
  return count ~= false and count ~= '0' and string.byte(count, 1) ~= 45 -- '-'
end

-- Sequences `count` (a text) messages of a room in one step, the `i`th
-- (from 0) taking the text `args[at + 3i] .. seq .. args[at + 3i + 1]`
-- and the origin `args[at + 3i + 2]`, and returns {the first seq, epoch}:
-- the `i`th got the first + i. keys: seq, epoch, log, members. `history` and `ttl_ms`
-- are the texts the caller passed, `now` the unix ms it stamps the entries
-- with. This runs for every room message, so it makes as few calls and
-- conversions as it can: the epoch, the seq and the members are read and
-- the expiry settled once per call, not per message (a node sends the
-- messages of a room it took together as one call); no TIME (the caller's
-- clock stamps the entries: nodes' clocks differ by milliseconds, which
-- moves an entry's expiry by as much against a TTL of seconds or minutes);
-- each seq turned into text once, numbers passed to Redis as the caller's
-- texts.
local function sequence(keys, args, at, count, fresh_epoch, history, ttl_ms, channel, hooks, now)
  local epoch = redis.call('GET', keys[2])
  if not epoch then
    -- A new room, or one forgotten (expired, or lost with the data): a new
    -- epoch starts at seq 1.
    epoch = fresh_epoch
    redis.call('DEL', keys[1], keys[3])
    redis.call('SET', keys[2], epoch)
  end
  -- The count goes to Redis as the caller's text: a Lua number would be
  -- formatted with printf on the way.
  local n = tonumber(count)
  local first = redis.call('INCRBY', keys[1], count) - n + 1
  local keep = history ~= '0'
  for i = 0, n - 1 do
    local head, tail, origin = args[at + 3 * i], args[at + 3 * i + 1], args[at + 3 * i + 2]
    local id = string.format('%d', first + i)
    local message = head .. id .. tail
    if keep and i < n - 1 then
      redis.call('XADD', keys[3], '0-' .. id, 'm', message, 't', now)
    elseif keep then
      -- Trimmed approximately, once per call (by its last entry): Redis
      -- drops whole stream nodes only, so the log keeps the last `history`
      -- entries and at most one node more (100 entries or 4 KiB by
      -- default). Exact trimming walked the oldest node's entries on every
      -- call, and saved no memory: a trimmed entry stays in its node until
      -- the whole node goes. The readers (`latest`, `read_history`) never
      -- return more than the last `history`.
      redis.call('XADD', keys[3], 'MAXLEN', '~', history, '0-' .. id, 'm', message, 't', now)
    end
    redis.call('SPUBLISH', channel, epoch .. ' ' .. id .. ' ' .. origin .. ' ' .. message)
    hook(hooks, 'room.message', true, nil, message)
  end
  -- With members the room stays (joins made its keys persistent).
  if not occupied(redis.call('GET', keys[4])) then
    if keep then
      for i = 1, 3 do
        redis.call('PEXPIRE', keys[i], ttl_ms)
      end
    else
      redis.call('DEL', keys[1], keys[2], keys[3])
    end
  end
  return {first, epoch}
end

-- Used by roomcast nodes, which build the message text themselves: the
-- messages of one room, in the order they were taken.
-- KEYS: seq, epoch, log, members.
-- ARGV: fresh epoch, history length, history TTL (ms), channel, the time
-- (unix ms), the number of messages n (at least 1), then n times: head,
-- tail, origin; then the webhook arguments (optional, left out when off;
-- the node sets the room.message bit only for a room that --webhook-rooms
-- matches). Returns {the first message's seq, epoch}.
local function publish(keys, args)
  local n = tonumber(args[6])
  if not n or n < 1 or #args < 6 + 3 * n then
    return redis.error_reply('ERR roomcast_publish: a count of 1 or more, then its messages')
  end
  return sequence(keys, args, 7, args[6], args[1], args[2], args[3], args[4],
    hooks_of(args, 7 + 3 * n), args[5])
end

-- The emitter: any backend publishes a room event without a roomcast node.
-- KEYS: seq, epoch, log, members.
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
  return sequence(keys, {head, tail, '-'}, 1, '1', fresh_epoch, args[5], args[6], args[7], nil, ts)
end

-- The latest `n` messages up to `seq` of a history younger than `min_t`,
-- oldest first, without a gap: a node tells each one's seq by its place
-- (the last is `seq`), so a lost message (a seq raised by `recover`) ends
-- them. Only seqs from `from` on are read (the log may keep older ones:
-- see `sequence`).
local function latest(log, n, min_t, seq, from)
  if n <= 0 then
    return {}
  end
  local entries = redis.call('XREVRANGE', log, '+', string.format('0-%d', from), 'COUNT', n)
  local run = 0
  while run < #entries and entries[run + 1][1] == '0-' .. (seq - run)
      and fresh(entries[run + 1], min_t) do
    run = run + 1
  end
  local messages = {}
  for i = run, 1, -1 do
    messages[#messages + 1] = entries[i][2][2]
  end
  return messages
end

-- What `room:join` gets back (docs/protocol.md section 7), the same on every
-- node: {epoch, seq, recovered (-1: not asked, 0, 1), {messages...}}.
-- keys: seq, epoch, log.
-- ARGV: history k, since, epoch (each '' when absent), a fresh epoch for a
-- room that has none, the history TTL (ms). `kept` is the history length
-- (--history): the log may hold more (trimming is approximate), and only
-- the messages of the last `kept` seqs count as kept; nil (a caller that
-- did not pass it) counts the whole log.
local function read_history(keys, args, kept)
  local k = tonumber(args[1])
  local since = tonumber(args[2])
  local asked_epoch = args[3]
  local ttl_ms = tonumber(args[5])
  local min_t = now_ms() - ttl_ms
  local epoch = redis.call('GET', keys[2])
  if not epoch then
    epoch = args[4]
    redis.call('DEL', keys[1], keys[3])
    redis.call('SET', keys[2], epoch, 'PX', math.max(ttl_ms, 1))
  end
  local seq = tonumber(redis.call('GET', keys[1]) or '0')
  local from = kept and math.max(seq - kept + 1, 0) or 0
  if not since then
    return {epoch, seq, -1, latest(keys[3], k or 0, min_t, seq, from)}
  end
  -- Covered when nothing is missing, or the entry right after `since` is
  -- kept and young enough (every later one is younger, give or take the
  -- milliseconds by which the clocks of the nodes that stamped them differ).
  local covered = since == seq
  local entries = {}
  if since < seq and since >= from - 1 then
    entries = redis.call('XRANGE', keys[3], '(0-' .. since, '+')
    local first = entries[1]
    covered = first ~= nil and first[1] == '0-' .. (since + 1) and fresh(first, min_t)
  end
  if asked_epoch == epoch and covered then
    local messages = {}
    for i = 1, #entries do
      messages[i] = entries[i][2][2]
    end
    return {epoch, seq, 1, messages}
  end
  return {epoch, seq, 0, latest(keys[3], k or seq, min_t, seq, from)}
end

-- ARGV: those of `read_history`, then the history length (--history).
local function history(keys, args)
  return read_history(keys, args, tonumber(args[6]))
end

-- A node's recovery of a room after a reconnect: what it missed since it
-- delivered `since` of `epoch`, as `history` reads it. An engine behind
-- the node in that epoch lost writes (a failover to a replica that had not
-- got them, a restart from an older file): its seq is raised to `since`, so
-- no seq the node delivered is given out again in the epoch. The history
-- is kept; what was lost is a gap. (A join's `since` raises nothing: a
-- client may send any number.) Same keys and arguments as `history`.
local function recover(keys, args)
  local since = tonumber(args[2])
  if since and redis.call('GET', keys[2]) == args[3]
      and tonumber(redis.call('GET', keys[1]) or '0') < since then
    redis.call('SET', keys[1], since, 'KEEPTTL')
    -- A seq key that was gone would otherwise outlive the room's epoch.
    local ttl = redis.call('PTTL', keys[2])
    if ttl > 0 then
      redis.call('PEXPIRE', keys[1], ttl)
    end
  end
  return read_history(keys, args, tonumber(args[6]))
end

-- The Server API's history_remove: the room's messages go; while it has
-- members anywhere in the cluster its seq and epoch stay (the next message
-- continues the count), otherwise the room is forgotten and its next
-- message starts a new epoch at seq 1. Keys: seq, epoch, log, members.
-- Returns 1 when the room was forgotten, 0 when only its messages went.
local function forget(keys, args)
  if tonumber(redis.call('GET', keys[4]) or '0') > 0 then
    redis.call('DEL', keys[3])
    return 0
  end
  redis.call('DEL', keys[1], keys[2], keys[3])
  return 1
end

-- Presence. A presence event goes on the room's channel as
-- "- 0 <origin> <event>": no epoch, no seq, never in the history.
local function announce(channel, origin, text)
  redis.call('SPUBLISH', channel, '- 0 ' .. origin .. ' ' .. text)
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
-- origin, the presence:join text, the four webhook arguments (each '' or 0
-- when off), then the history length (--history).
-- Returns {epoch, seq, recovered, {messages...}, members}.
local function join(keys, args)
  local reply = read_history(keys, args, tonumber(args[20]))
  if args[10] ~= '1' then
    local hooks = hooks_of(args, 16)
    local user = args[7]
    if args[9] == '1' then
      redis.call('HSET', keys[5], user, args[8])
    end
    local before = members(keys)
    local total = count_in(keys, args[6], user, 1)
    local room_total = members(keys)
    if before == 0 and room_total > 0 then
      hook(hooks, 'room.occupied', true)
    end
    if total == 1 and args[11] == '1' then
      hook(hooks, 'presence.join', true, user)
    end
    -- A room with members is never forgotten.
    for i = 1, 3 do
      redis.call('PERSIST', keys[i])
    end
    if total == 1 and args[11] == '1' and room_total <= tonumber(args[12]) then
      announce(args[13], args[14], args[15])
    end
  end
  reply[5] = members(keys)
  return reply
end

-- A connection of `user` on `node` left: counted out, with a
-- presence:leave for the user's last connection in the cluster; the last
-- member's leave lets the room expire with its history.
-- KEYS: the seven of a join.
-- ARGV: node, user, announce (0/1), event limit, channel, origin, the
-- presence:leave text, the history TTL (ms), then the webhook arguments
-- (optional). Returns the room's connections.
local function leave(keys, args)
  local hooks = hooks_of(args, 9)
  local before = members(keys)
  local total = count_in(keys, args[1], args[2], -1)
  if total == 0 and args[3] == '1' and before <= tonumber(args[4]) then
    announce(args[5], args[6], args[7])
  end
  if total == 0 and args[3] == '1' then
    hook(hooks, 'presence.leave', true, args[2])
  end
  local after = members(keys)
  if after == 0 and before > 0 then
    hook(hooks, 'room.vacated', true)
    settle_empty(keys, tonumber(args[8]))
  end
  return after
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
-- KEYS: the seven of a join. ARGV: node, room, announce (0/1), event
-- limit, channel, the history TTL (ms), the four webhook arguments (each
-- '' when off), then triples user, connections, name ('' none). Returns
-- the room's connections.
local function sync(keys, args)
  local k = keys
  local node, room = args[1], args[2]
  local can_announce = args[3] == '1'
  local limit = tonumber(args[4])
  local channel = args[5]
  local ttl_ms = tonumber(args[6])
  local hooks = hooks_of(args, 7)
  local had = members(k)
  local wanted = {}
  for i = 11, #args, 3 do
    wanted[args[i]] = {tonumber(args[i + 1]), args[i + 2]}
  end
  local own = redis.call('HGETALL', keys[6])
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
        if total == 0 and can_announce then
          hook(hooks, 'presence.leave', true, user)
        end
        if before > 0 and members(k) == 0 then
          hook(hooks, 'room.vacated', true)
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
        redis.call('HSET', keys[5], user, entry[2])
      end
      local before = members(k)
      local total = count_in(k, node, user, entry[1])
      if before == 0 then
        hook(hooks, 'room.occupied', true)
      end
      if total == entry[1] and can_announce then
        hook(hooks, 'presence.join', true, user)
      end
      if total == entry[1] and can_announce and members(k) <= limit then
        local name = redis.call('HGET', keys[5], user)
        announce(channel, '-', '{"event":"presence:join","room":' .. cjson.encode(room)
          .. ',"data":{"userId":' .. cjson.encode(user) .. ',"name":'
          .. (name and cjson.encode(name) or 'null') .. '}}')
      end
    end
  end
  local now = members(k)
  if now > 0 then
    for i = 1, 3 do
      redis.call('PERSIST', keys[i])
    end
  elseif had > 0 then
    settle_empty(keys, ttl_ms)
  end
  return now
end

-- Counts `n` connections of `user` on `node` in (or out, n < 0): the online
-- set (the pseudo-room '') that user:send and system:broadcast count.
-- KEYS: users, names, nodes, members. ARGV: node, user, n, then the
-- webhook arguments (optional): a user's first connection in the cluster
-- is user.online, their last user.offline.
-- Returns the connections counted.
local function count(keys, args)
  local k = {nil, nil, nil, keys[1], keys[2], keys[3], keys[4]}
  local n = tonumber(args[3])
  local hooks = hooks_of(args, 4)
  local total = count_in(k, args[1], args[2], n)
  if total ~= nil and n > 0 and total == n then
    hook(hooks, 'user.online', false, args[2])
  elseif total == 0 and n < 0 then
    hook(hooks, 'user.offline', false, args[2])
  end
  return members(k)
end

-- user:send (to a user) or system:broadcast (to '' : everyone): published
-- once on the direct channel (<prefix>:{~}:direct, in the online set's
-- slot) for every node to deliver to its own connections. KEYS: users, members (of the online set).
-- ARGV: to, channel, payload. Returns the connections it is for.
local function send(keys, args)
  local n
  if args[1] == '' then
    n = redis.call('GET', keys[2])
  else
    n = redis.call('HGET', keys[1], args[1])
  end
  redis.call('SPUBLISH', args[2], args[3])
  return tonumber(n or '0')
end

redis.register_function('roomcast_publish', publish)
redis.register_function('roomcast_count', count)
redis.register_function('roomcast_send', send)
redis.register_function('roomcast_history', history)
redis.register_function('roomcast_recover', recover)
redis.register_function('roomcast_join', join)
redis.register_function('roomcast_leave', leave)
redis.register_function('roomcast_presence', presence)
redis.register_function('roomcast_sync', sync)
redis.register_function('roomcast_emit', emit)
redis.register_function('roomcast_forget', forget)
