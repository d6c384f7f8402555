-- Move a periodic entry's last fire time on without publishing (a skipped fire, or the
-- start of a new entry's schedule), only if it is still the one the beat read: the same
-- compare-and-set as a fire (broker/schedule_fire.lua), so one due time is either fired
-- or skipped, once, whichever beat gets there.
-- KEYS[1]: the last-fire hash; ARGV: entry name, the last fire time read ('' for none),
-- the new one. Returns 1 when set, 0 when the entry had moved on.
local last = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if last ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
