-- Once per window for one (task, exception type), counting what the window suppressed.
-- KEYS[1]: window marker, expires when the window closes
-- KEYS[2]: failures suppressed since the last notification
-- ARGV[1]: window in seconds; ARGV[2]: seconds the suppressed count is kept for the next one
-- Returns the occurrences to notify now (1 + suppressed in the previous window), or 0.
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  local suppressed = tonumber(redis.call('GET', KEYS[2]) or '0')
  redis.call('DEL', KEYS[2])
  return 1 + suppressed
end
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 0
