-- Take the next message and record it as unacknowledged, in one atomic step.
--
-- Kombu takes a message with BRPOP and records it in the unacked hash in a second round
-- trip: a worker SIGKILLed between the two loses the message (kombu #305). Here the pop
-- and the record are one script, so a popped message is always in the unacked hash, and
-- kombu's visibility timeout restores it if its worker dies.
--
-- KEYS: unacked hash, unacked index (sorted set), undeliverable list,
--       n wake lists (one per queue), then the queue lists, priority-major (n per step)
-- ARGV: n, now (the unacked index score), 1 if the caller already took a wake token,
--       entries kept in the undeliverable list (the newest)
-- Returns {queue key, message, messages set aside as undeliverable}, or {false, false, k}.
local n = tonumber(ARGV[1])
local token_taken = ARGV[3] == '1'
local undeliverable_max = tonumber(ARGV[4])
local first_queue_key = 4 + n
local set_aside = 0
for j = first_queue_key, #KEYS do
  while true do
    local message = redis.call('RPOP', KEYS[j])
    if not message then break end
    local ok, payload = pcall(cjson.decode, message)
    local props = ok and type(payload) == 'table' and payload['properties']
    local tag = type(props) == 'table' and props['delivery_tag']
    local info = type(props) == 'table' and props['delivery_info']
    if type(tag) == 'string' and type(info) == 'table' then
      if not token_taken then
        -- one wake token per message: consumers that wait are woken by what is left
        redis.call('RPOP', KEYS[3 + (j - first_queue_key) % n + 1])
      end
      redis.call('ZADD', KEYS[2], ARGV[2], tag)
      redis.call('HSET', KEYS[1], tag, '[' .. message .. ',' .. cjson.encode(info['exchange'])
        .. ',' .. cjson.encode(info['routing_key']) .. ']')
      return {KEYS[j], message, set_aside}
    end
    -- not a kombu message: kept aside for a person, never looped on; capped, so a
    -- producer of foreign messages cannot fill the server's memory
    redis.call('RPUSH', KEYS[3], message)
    redis.call('LTRIM', KEYS[3], -undeliverable_max, -1)
    set_aside = set_aside + 1
  end
end
return {false, false, set_aside}
