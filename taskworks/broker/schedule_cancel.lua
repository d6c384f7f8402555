-- Take a scheduled task out of the schedule before it is due.
--
-- KEYS: the schedule, the envelopes hash, the ids hash, the counts hash
-- ARGV: task id
-- Returns its envelope, or false when it is not scheduled (never was, moved or
-- cancelled already).
local tag = redis.call('HGET', KEYS[3], ARGV[1])
if not tag then return false end
redis.call('HDEL', KEYS[3], ARGV[1])
local raw = redis.call('HGET', KEYS[2], tag)
if redis.call('ZREM', KEYS[1], tag) == 0 or not raw then return false end
redis.call('HDEL', KEYS[2], tag)
local ok, envelope = pcall(cjson.decode, raw)
if ok and type(envelope) == 'table' and type(envelope.queue) == 'string' then
  if redis.call('HINCRBY', KEYS[4], envelope.queue, -1) <= 0 then
    redis.call('HDEL', KEYS[4], envelope.queue)
  end
end
return raw
