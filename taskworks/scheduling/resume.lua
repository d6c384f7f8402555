-- Resume a paused periodic entry: take it out of the paused set and, only if it was
-- there, move its last fire time up to ARGV[2] (its latest due time, so that what fell
-- due while it was paused is skipped), never back.
-- KEYS: the paused set, the last-fire hash; ARGV: entry name, latest due time ('' for none)
-- Returns 1 when the entry was paused.
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then return 0 end
if ARGV[2] ~= '' then
  local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '')
  if last == nil or last < tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  end
end
return 1
