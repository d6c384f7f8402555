-- Acquire the running lease of an idempotent call, or return its stored result: one
-- atomic step, so two duplicates can never both start.
-- KEYS[1]: stored result (JSON)      KEYS[2]: running lease (value: the holder)
-- ARGV[1]: this attempt's holder id  ARGV[2]: lease in milliseconds
-- Returns {'done', result} | {'acquired', ''} | {'running', holder, lease ms left}
local stored = redis.call('GET', KEYS[1])
if stored then
  return {'done', stored}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {'acquired', ''}
end
local holder = redis.call('GET', KEYS[2]) or ''
return {'running', holder, redis.call('PTTL', KEYS[2])}
