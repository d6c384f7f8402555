-- Publish the scheduled messages that are due: each to the end of its list, with a wake
-- token, exactly once. Any number of processes run this (workers, beat); the script is
-- atomic, so a message is moved by one of them, and a process killed while it waits for
-- the reply has moved all of a batch or none of it.
--
-- KEYS: the schedule, the envelopes hash, the ids hash, the counts hash, the
--       undeliverable list (an envelope that is not ours is set aside there, not lost)
-- ARGV: now (epoch seconds), the most messages to move, the wake-list key prefix, wake
--       tokens kept per list, undeliverable entries kept
-- Returns {messages moved, the next due time or false}.
local now, budget = ARGV[1], tonumber(ARGV[2])
local wake_prefix, wake_max, undeliverable_max = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, budget)
local moved = 0
for _, tag in ipairs(due) do
  redis.call('ZREM', KEYS[1], tag)
  local raw = redis.call('HGET', KEYS[2], tag)
  if raw then
    redis.call('HDEL', KEYS[2], tag)
    local ok, envelope = pcall(cjson.decode, raw)
    if ok and type(envelope) == 'table' and type(envelope.key) == 'string'
        and type(envelope.message) == 'string' and type(envelope.queue) == 'string' then
      redis.call('LPUSH', envelope.key, envelope.message)
      local wake = wake_prefix .. envelope.queue
      redis.call('LPUSH', wake, 1)
      redis.call('LTRIM', wake, 0, wake_max - 1)
      if type(envelope.id) == 'string' and redis.call('HGET', KEYS[3], envelope.id) == tag then
        redis.call('HDEL', KEYS[3], envelope.id)
      end
      if redis.call('HINCRBY', KEYS[4], envelope.queue, -1) <= 0 then
        redis.call('HDEL', KEYS[4], envelope.queue)
      end
      moved = moved + 1
    else
      redis.call('LPUSH', KEYS[5], raw)
      redis.call('LTRIM', KEYS[5], 0, undeliverable_max - 1)
    end
  end
end
local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {moved, next_due[2] or false}
