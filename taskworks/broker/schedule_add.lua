-- Keep a message that is not due yet in the durable schedule (broker/schedule.py).
--
-- KEYS: the schedule (sorted set of delivery tags by due time), the envelopes hash
--       (tag -> JSON envelope), the ids hash (task id -> tag), the counts hash (queue ->
--       messages scheduled)
-- ARGV: delivery tag, due time (epoch seconds), envelope, task id, queue
-- One script: a message is in all four or in none.
local tag, due, envelope, task_id, queue = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('HSETNX', KEYS[2], tag, envelope) == 0 then
  return 0  -- the same publish sent again (a retried round trip): kept once
end
redis.call('ZADD', KEYS[1], due, tag)
redis.call('HSET', KEYS[3], task_id, tag)
redis.call('HINCRBY', KEYS[4], queue, 1)
return 1
