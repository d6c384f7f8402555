-- Publish a periodic entry's fire and record its fire time, in one step: if the entry's
-- last fire time is still the one the firing process read, set the new one and push the
-- message (with a wake token); else do nothing (another beat fired it already). So a
-- restart or a change of leader neither repeats a fire nor loses one.
--
-- KEYS: the last-fire hash, the list the message goes to
-- ARGV: entry name, the last fire time read ('' for none), the new one, the message,
--       the queue's wake-list key, wake tokens kept
-- Returns 1 when this call fired, 0 when the entry had moved on.
local last = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if last ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('LPUSH', KEYS[2], ARGV[4])
redis.call('LPUSH', ARGV[5], 1)
redis.call('LTRIM', ARGV[5], 0, tonumber(ARGV[6]) - 1)
return 1
