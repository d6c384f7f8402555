-- Acknowledge what this consumer finished, then take the next message and record it as
-- held by this consumer, in one atomic step.
--
-- Kombu takes a message with BRPOP and records it in the unacked hash in a second round
-- trip: a worker SIGKILLed between the two loses the message (kombu #305). Here the pop
-- and the record are one script, so a popped message is always in the unacked hash and
-- in its consumer's held set, which sweep.lua empties back into the queue once the
-- consumer's heartbeat lapses (or a message outstays the visibility timeout).
--
-- KEYS: unacked hash, this consumer's held set (sorted set: member "tag|queue key",
--       scored by the time taken), undeliverable list, n wake lists (one per queue),
--       then the queue lists, priority-major (n per step)
-- ARGV: n, now (the held score), 1 if the caller already took a wake token, entries
--       kept in the undeliverable list (the newest), the number of acknowledgements k,
--       then k held members to acknowledge
-- Returns {queue key, message, messages set aside as undeliverable}, or {false, false, k}.
local n = tonumber(ARGV[1])
local token_taken = ARGV[3] == '1'
local undeliverable_max = tonumber(ARGV[4])
local acks = tonumber(ARGV[5])
-- an acknowledgement removes the unacked entry only if this consumer still holds it: a
-- message restored meanwhile (its holder was presumed dead) may be held by another
-- consumer now, under the same tag, and its entry must stay
for i = 6, 5 + acks do
  local member = ARGV[i]
  if redis.call('ZREM', KEYS[2], member) == 1 then
    redis.call('HDEL', KEYS[1], string.sub(member, 1, string.find(member, '|', 1, true) - 1))
  end
end
local first_queue_key = 4 + n
if #KEYS < first_queue_key then
  return {false, false, 0}  -- acknowledgements only
end
local queue_keys = {}
for j = first_queue_key, #KEYS do
  queue_keys[#queue_keys + 1] = KEYS[j]
end
local lmpop = {'LMPOP', #queue_keys, unpack(queue_keys)}  -- unpack last: every key
lmpop[#lmpop + 1] = 'RIGHT'
local wake_of = {}  -- queue key -> its queue's wake list
for j = first_queue_key, #KEYS do
  wake_of[KEYS[j]] = KEYS[3 + (j - first_queue_key) % n + 1]
end
local set_aside = 0
while true do
  -- LMPOP (Redis 7, Valkey): the first non-empty list in one command; else one RPOP each
  local key, message
  local popped = redis.pcall(unpack(lmpop))
  if type(popped) == 'table' and popped.err == nil then
    key, message = popped[1], popped[2][1]
  elseif type(popped) == 'table' and popped.err ~= nil then
    for _, k in ipairs(queue_keys) do
      message = redis.call('RPOP', k)
      if message then key = k break end
    end
  end
  if not message then
    return {false, false, set_aside}
  end
  local ok, payload = pcall(cjson.decode, message)
  local props = ok and type(payload) == 'table' and payload['properties']
  local tag = type(props) == 'table' and props['delivery_tag']
  local info = type(props) == 'table' and props['delivery_info']
  if type(tag) == 'string' and type(info) == 'table' then
    if not token_taken then
      -- one wake token per message: consumers that wait are woken by what is left
      redis.call('RPOP', wake_of[key])
    end
    redis.call('ZADD', KEYS[2], ARGV[2], tag .. '|' .. key)
    redis.call('HSET', KEYS[1], tag, '[' .. message .. ',' .. cjson.encode(info['exchange'])
      .. ',' .. cjson.encode(info['routing_key']) .. ']')
    return {key, message, set_aside}
  end
  -- not a kombu message: kept aside for a person, never looped on; capped, so a
  -- producer of foreign messages cannot fill the server's memory
  redis.call('RPUSH', KEYS[3], message)
  redis.call('LTRIM', KEYS[3], -undeliverable_max, -1)
  set_aside = set_aside + 1
end
