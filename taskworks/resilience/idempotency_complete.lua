-- Store the result of an idempotent call and drop its lease, in one step: a duplicate
-- sees either the lease (and waits) or the result, never neither.
-- KEYS[1]: stored result   KEYS[2]: running lease
-- ARGV[1]: holder id       ARGV[2]: result JSON ('' on failure: only release)
-- ARGV[3]: result TTL in seconds
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
end
return 1
