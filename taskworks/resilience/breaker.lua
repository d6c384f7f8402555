-- Every state change of one circuit breaker, atomic, with the Redis server's clock.
--
-- KEYS[1] state hash   KEYS[2] window: every outcome (zset)   KEYS[3] window: failures
-- KEYS[4] journal stream of transitions   KEYS[5] breaker names by last write (zset)
-- KEYS[6] the set of names older versions wrote (read, never written: only aged)
-- ARGV: op, name, token, failure_threshold, reset_timeout_ms, probe_timeout_ms,
--       failure_rate (0: off), window_ms, min_calls, detail (error or reason), idle_ms
-- op: admit | success | failure | release | reset
-- Returns {code, state, retry_after_ms, previous_state_if_transition_or_empty}
--   admit: code 0 refused, 1 admitted, 2 admitted as the one probe of half-open
-- Every op but a closed breaker's admit refreshes the keys' expiry (idle_ms): a breaker
-- per http_call host would otherwise keep its hash, stream and name for ever.
local op, name, token = ARGV[1], ARGV[2], ARGV[3]
local threshold = tonumber(ARGV[4])
local reset_ms = tonumber(ARGV[5])
local probe_ms = tonumber(ARGV[6])
local rate = tonumber(ARGV[7])
local window_ms = tonumber(ARGV[8])
local min_calls = tonumber(ARGV[9])
local detail = ARGV[10]
local idle_ms = tonumber(ARGV[11]) or 0

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local h = redis.call('HMGET', KEYS[1], 'state', 'open_until', 'probe_until', 'probe_token',
  'failures')
local state = h[1] or 'closed'
local open_until = tonumber(h[2]) or 0
local probe_until = tonumber(h[3]) or 0
local probe_token = h[4] or ''

local function transition(to, reason)
  redis.call('HSET', KEYS[1], 'state', to, 'changed_at', now, 'last_transition',
    state .. '->' .. to, 'last_reason', reason, 'failure_threshold', threshold,
    'reset_timeout_ms', reset_ms)
  redis.call('HINCRBY', KEYS[1], 'transitions', 1)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', 100, '*', 'from', state, 'to', to,
    'reason', reason, 'at', now)
end

local function touch()
  redis.call('ZADD', KEYS[5], now, name)
  if idle_ms <= 0 then
    return  -- kept for ever (a breaker made with idle_ttl=None)
  end
  redis.call('PEXPIRE', KEYS[1], idle_ms)
  redis.call('PEXPIRE', KEYS[4], idle_ms)  -- a no-op while it has no transition
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - idle_ms)  -- names whose keys expired
  redis.call('PEXPIRE', KEYS[5], idle_ms)
  if redis.call('PTTL', KEYS[6]) == -1 then
    redis.call('PEXPIRE', KEYS[6], idle_ms)  -- once: its names age out with their keys
  end
end

local function grant_probe()
  redis.call('HSET', KEYS[1], 'probe_token', token, 'probe_until', now + probe_ms)
end

local function open(reason)
  transition('open', reason)
  redis.call('HSET', KEYS[1], 'open_until', now + reset_ms, 'failures', 0,
    'probe_token', '', 'probe_until', 0, 'opened_at', now)
  redis.call('DEL', KEYS[2], KEYS[3])
  return {1, 'open', reset_ms, state}
end

local function close(reason)
  transition('closed', reason)
  redis.call('HSET', KEYS[1], 'failures', 0, 'probe_token', '', 'probe_until', 0,
    'open_until', 0)
  redis.call('DEL', KEYS[2], KEYS[3])
  return {1, 'closed', 0, state}
end

local function handle()
  if op == 'admit' then
    if state == 'closed' then
      return {1, 'closed', 0, ''}  -- the common case reads and writes nothing else
    end
    if state == 'open' then
      if now < open_until then
        return {0, 'open', open_until - now, ''}
      end
      transition('half_open', 'reset timeout elapsed')
      grant_probe()
      return {2, 'half_open', 0, 'open'}
    end
    -- half_open: one probe at a time; a lease that ran out (its process died or hung)
    -- lets the next caller probe instead of blocking the breaker for ever
    if now < probe_until then
      return {0, 'half_open', math.min(probe_until - now, reset_ms), ''}
    end
    if probe_until > 0 then
      redis.call('HINCRBY', KEYS[1], 'probe_leases_expired', 1)
    end
    grant_probe()
    return {2, 'half_open', 0, ''}
  end

  if op == 'reset' then
    return close(detail ~= '' and detail or 'reset')
  end

  local is_probe = state == 'half_open' and token ~= '' and token == probe_token

  if op == 'release' then
    -- an admitted probe that did not run (deferred, revoked): let another caller probe
    if is_probe then
      redis.call('HSET', KEYS[1], 'probe_token', '', 'probe_until', 0)
    end
    return {1, state, 0, ''}
  end

  if h[1] == false then
    redis.call('HSET', KEYS[1], 'state', 'closed', 'failure_threshold', threshold,
      'reset_timeout_ms', reset_ms)
  end

  if op == 'success' then
    redis.call('HINCRBY', KEYS[1], 'successes', 1)
    if is_probe then
      return close('probe succeeded')
    end
    if state == 'closed' then
      if h[5] and h[5] ~= '0' then
        redis.call('HSET', KEYS[1], 'failures', 0)  -- the consecutive count starts again
      end
      if rate > 0 then
        local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
        redis.call('ZADD', KEYS[2], now, seq)
        redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window_ms)
        redis.call('PEXPIRE', KEYS[2], window_ms)
      end
    end
    return {1, state, 0, ''}
  end

  if op == 'failure' then
    redis.call('HINCRBY', KEYS[1], 'failures_total', 1)
    redis.call('HSET', KEYS[1], 'last_failure_at', now, 'last_error', detail)
    if is_probe then
      return open('probe failed: ' .. detail)
    end
    if state ~= 'closed' then
      -- a late outcome of a call admitted before the breaker opened: counted, no change
      return {1, state, math.max(open_until - now, 0), ''}
    end
    local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
    if failures >= threshold then
      return open(failures .. ' consecutive failures (last: ' .. detail .. ')')
    end
    if rate > 0 then
      local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
      local since = now - window_ms
      redis.call('ZADD', KEYS[2], now, seq)
      redis.call('ZADD', KEYS[3], now, seq)
      redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', since)
      redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', since)
      redis.call('PEXPIRE', KEYS[2], window_ms)
      redis.call('PEXPIRE', KEYS[3], window_ms)
      local calls = redis.call('ZCARD', KEYS[2])
      local failed = redis.call('ZCARD', KEYS[3])
      if calls >= min_calls and failed / calls >= rate then
        return open(string.format('failure rate %d/%d over %.0fs (last: %s)', failed, calls,
          window_ms / 1000, detail))
      end
    end
    return {1, 'closed', 0, ''}
  end

  return nil
end

local reply = handle()
if reply == nil then
  return redis.error_reply('unknown breaker operation ' .. tostring(op))
end
if op ~= 'admit' or state ~= 'closed' then
  touch()  -- a closed breaker's admit writes nothing: its outcome report touches
end
return reply
