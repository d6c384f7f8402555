-- Extend a lease only while this holder still owns it (an expired lease taken over by
-- a redelivery is not stolen back).
-- KEYS[1]: running lease   ARGV[1]: holder id   ARGV[2]: lease in milliseconds
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
