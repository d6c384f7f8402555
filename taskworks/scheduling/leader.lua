-- Acquire or renew a leader lease in one round trip.
-- KEYS[1]: lock key; ARGV[1]: this holder's token; ARGV[2]: lease in milliseconds.
-- Returns 1 when the caller holds the lease afterwards, 0 when another holder does.
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
