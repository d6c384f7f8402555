-- A cluster-wide rate limit: a token bucket in its GCRA form (a "theoretical arrival
-- time", TAT), on the server's clock, in two parts:
-- * the schedule: a caller over the limit reserves the next free slot (within the
--   horizon) and is deferred until then, so waiting callers are served in order, never
--   in a herd;
-- * the gate, the hard rule on actual admissions: at most burst + 1 at once, then one
--   per interval. A reserved caller that comes back late (its worker was busy) is
--   admitted only through the gate: late callers never bunch up and break the rate.
-- KEYS[1]: schedule TAT (us)   KEYS[2]: gate TAT (us)   KEYS[3]: this task's reservation
-- ARGV[1]: microseconds per token   ARGV[2]: burst (tokens)   ARGV[3]: horizon (us)
-- Returns {wait_us, reserved}: wait 0 = admitted now.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local gate = tonumber(redis.call('GET', KEYS[2]) or '0')
local gate_at = gate - burst * interval

local function keep(key, value)
  redis.call('SET', key, string.format('%.0f', value),
             'PX', math.ceil((value - now) / 1000) + 1000)
end

local function admit()
  keep(KEYS[2], math.max(gate, now) + interval)
  return {0, 0}
end

local reserved = redis.call('GET', KEYS[3])
if reserved then
  local at = tonumber(reserved)
  if at > now + 20000 then  -- too early (20 ms allowed: hosts' clocks differ): wait on
    return {math.floor(at - now), 1}
  end
  redis.call('DEL', KEYS[3])
  if gate_at <= now then
    return admit()
  end
  -- late, and others ran just now: its slot is lost, it queues again like a newcomer
end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local slot = math.max(tat - (burst - 1) * interval, gate_at, now)
local wait = slot - now
if wait > tonumber(ARGV[3]) then
  return {math.floor(wait), 0}  -- beyond the horizon: no reservation, ask again later
end
keep(KEYS[1], math.max(tat, slot) + interval)
if wait <= 0 then
  return admit()
end
redis.call('SET', KEYS[3], string.format('%.0f', slot), 'PX', math.ceil(wait / 1000) + 60000)
return {math.floor(wait), 1}
