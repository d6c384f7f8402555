-- Beat for the live consumers of a process, and give back what dead consumers held.
--
-- Every consumer (a kombu channel of this transport) records each message it takes in
-- its held set (consume.lua). A live process runs this script about once a second for
-- its consumers: their scores in the registry become the server's time now. A consumer
-- whose score is older than the timeout is dead (SIGKILL, OOM kill, lost host, lost
-- connection): whichever process runs this first moves each message it held back to the
-- front of the list it came from, marked redelivered, with a wake token, and removes
-- its unacked entry. One script, so each message is moved exactly once; a process killed
-- mid-sweep leaves the rest for the next sweep.
--
-- With a visibility timeout, messages held longer than that by live consumers are
-- given back too (kombu's rule, for a consumer that is alive but stuck).
--
-- KEYS: consumer registry (sorted set: consumer id, scored by its last beat),
--       unacked hash
-- ARGV: held-set key prefix, wake-list key prefix, the consumer timeout (s), the
--       visibility timeout (s; negative: not checked), client time now (held scores are
--       client times), the most messages to move, wake tokens kept per list,
--       then the ids of the consumers beating now
-- Returns {messages moved, messages not marked redelivered (not kombu's JSON layout)}.
local held_prefix, wake_prefix = ARGV[1], ARGV[2]
local timeout, visibility = tonumber(ARGV[3]), tonumber(ARGV[4])
local client_now, budget, wake_max = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for i = 8, #ARGV do
  redis.call('ZADD', KEYS[1], now, ARGV[i])
end

local moved, unmarked = 0, 0
local MARK = '"delivery_info": {'

local function give_back(held, member)
  redis.call('ZREM', held, member)
  local bar = string.find(member, '|', 1, true)
  if not bar then return end
  local tag, queue_key = string.sub(member, 1, bar - 1), string.sub(member, bar + 1)
  local entry = redis.call('HGET', KEYS[2], tag)
  if not entry then return end  -- acknowledged meanwhile
  redis.call('HDEL', KEYS[2], tag)
  -- the entry is '[' .. message .. ',' .. exchange .. ',' .. routing key .. ']'
  local ok, parts = pcall(cjson.decode, entry)
  if not ok or type(parts) ~= 'table' then
    redis.call('RPUSH', queue_key, entry)  -- never dropped; the consumer sets it aside
    unmarked = unmarked + 1
  else
    local tail = ',' .. cjson.encode(parts[2]) .. ',' .. cjson.encode(parts[3]) .. ']'
    local message = string.sub(entry, 2, #entry - #tail)
    -- delivery_info is the last object of kombu's message (in its properties): mark
    -- it redelivered, as kombu's own restore does, by text so nothing else changes
    local at, from = nil, 1
    while true do
      local s, e = string.find(message, MARK, from, true)
      if not s then break end
      at, from = e, e + 1
    end
    if at then
      if string.sub(message, at + 1, at + 19) ~= '"redelivered": true' then
        message = string.sub(message, 1, at) .. '"redelivered": true, '
          .. string.sub(message, at + 1)
      end
    else
      unmarked = unmarked + 1
    end
    redis.call('RPUSH', queue_key, message)
  end
  local queue = string.gsub(queue_key, '\6\22%d+$', '')
  redis.call('LPUSH', wake_prefix .. queue, 1)
  redis.call('LTRIM', wake_prefix .. queue, 0, wake_max - 1)
  moved = moved + 1
end

local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - timeout, 'LIMIT', 0, 32)
for _, consumer in ipairs(dead) do
  if moved >= budget then break end
  local held = held_prefix .. consumer
  for _, member in ipairs(redis.call('ZRANGE', held, 0, budget - moved - 1)) do
    give_back(held, member)
  end
  if redis.call('ZCARD', held) == 0 then
    redis.call('ZREM', KEYS[1], consumer)
  end
end

if visibility >= 0 and moved < budget then
  local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - timeout), '+inf')
  for _, consumer in ipairs(live) do
    if moved >= budget then break end
    local held = held_prefix .. consumer
    local late = redis.call('ZRANGEBYSCORE', held, '-inf', client_now - visibility,
                            'LIMIT', 0, budget - moved)
    for _, member in ipairs(late) do
      give_back(held, member)
    end
  end
end
return {moved, unmarked}
