-- Sliding-window retry budget: admit a retry if fewer than ARGV[2] were admitted in the
-- last ARGV[3] milliseconds. One round trip, atomic across every worker.
-- KEYS[1]: the task name's window (a sorted set of admitted retries, scored by time)
-- ARGV[1]: a unique member for this retry; ARGV[2]: budget; ARGV[3]: window in ms
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now_ms, ARGV[1])
redis.call('PEXPIRE', KEYS[1], window)
return 1
