-- Count one redelivery of a task, unless taskworks itself requeued the message because
-- its outcome could not be recorded (store or broker down): that is not a lost worker,
-- and must not spend the task's retries. One round trip, atomic.
-- KEYS[1]: the task's redelivery counter; KEYS[2]: its requeue marker
-- ARGV[1]: the counter's time to live in seconds
if redis.call('DEL', KEYS[2]) == 1 then
  return tonumber(redis.call('GET', KEYS[1]) or '0')
end
local count = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return count
