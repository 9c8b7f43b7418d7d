"""The Lua scripts that do all budget arithmetic atomically in Redis.

Every key a script touches carries the tenant's hash tag (``{tenant}``), so
each script runs on one Redis Cluster slot. Amounts are integers in the
bucket's own unit (micro-USD for budgets, requests or tokens for rate
limits); Lua numbers are doubles, exact for integers below 2**53.

A bucket is a hash with fields ``level`` (what is left; may go below zero
when a call costs more than its estimate), ``ts`` (ms of the last refill),
``cap``, ``period`` (the calendar period id; empty for a continuously
refilled bucket), ``inflight`` (what reservations not yet settled hold on
this period's level; zero again when the bucket starts afresh) and
``alert:<percent>`` (the period in which that soft limit was last reported;
dropped when the bucket is full again, which re-arms the limit).
"""

# KEYS[1]   reservation hash        tg:{t}:resv:<request_id>
# KEYS[2]   lease sorted set        tg:{t}:leases
# KEYS[3..] bucket hashes, one per scope that applies
# ARGV[1]   now, ms since the epoch
# ARGV[2]   estimated cost, micro-USD (kept for the ledger)
# ARGV[3]   lease deadline, ms since the epoch
# ARGV[4]   request id
# ARGV[5]   attribution record (opaque string kept with the reservation)
# ARGV[6..] five per bucket, in KEYS order: capacity, refill amount,
#           refill period ms, calendar period id ('' for a refilled bucket),
#           amount to hold
# Returns   {1, level_1, ..., level_n} held on every bucket (levels after)
#           {0, i, level, in_flight} bucket i (1-based) cannot hold its
#           amount; nothing is held; in_flight is what calls still running
#           hold on it (they give back what they do not use)
#           {-1} a reservation with this request id already exists
RESERVE = """
local now = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {-1}
end

-- The period a bucket is in: the one asked for, unless the bucket is already
-- in a later period of the same kind (ids are kind:yyyy-mm-dd). A gateway
-- whose clock lags behind another's near a boundary then neither resets the
-- bucket back to the old period nor, after it, to the new one again.
local function period_in_force(stored, asked)
  local kind = string.match(asked, '^[^:]*:')
  if stored and kind and string.sub(stored, 1, #kind) == kind
      and stored > asked then
    return stored
  end
  return asked
end

local n = #KEYS - 2
local levels, stamps, periods, fresh, full = {}, {}, {}, {}, {}
for i = 1, n do
  local at = 5 + 5 * (i - 1)
  local cap, amount = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  local period_ms, period_id = tonumber(ARGV[at + 3]), ARGV[at + 4]
  local hold = tonumber(ARGV[at + 5])
  local state = redis.call('HMGET', KEYS[i + 2], 'level', 'ts', 'period', 'cap')
  local level, ts = tonumber(state[1]), tonumber(state[2])
  local old_cap, old_period = tonumber(state[4]), state[3]
  period_id = period_in_force(old_period, period_id)
  if level ~= nil and old_cap == nil then
    -- Charged before any reservation sized it (calls admitted while the
    -- store was unreachable): it starts full, less what they spent.
    level, ts, old_cap, old_period = cap + level, now, cap, period_id
  end
  if level ~= nil and old_cap ~= cap then
    -- The budget changed size: what was spent stays spent.
    level = level + (cap - old_cap)
  end
  -- A bucket starts afresh in a new period and when it changes kind (a
  -- calendar budget reloaded as a refilled one, or the other way round):
  -- what the old kind held is settled against the level it was taken from,
  -- which is gone (see SETTLE).
  if level == nil or (old_period or '') ~= period_id then
    level, ts, fresh[i] = cap, now, true
  elseif period_id == '' and amount > 0 and now > ts then
    local added = math.floor((now - ts) * amount / period_ms)
    if level + added >= cap then
      level, ts = cap, now
    elseif added > 0 then
      level = level + added
      ts = ts + math.floor(added * period_ms / amount)
    end
  end
  if level > cap then
    level = cap
  end
  full[i] = level >= cap
  if hold > 0 and level < hold then
    local in_flight = tonumber(redis.call('HGET', KEYS[i + 2], 'inflight')) or 0
    return {0, i, level, math.max(in_flight, 0)}
  end
  levels[i], stamps[i], periods[i] = level - hold, ts, period_id
end

local buckets, holds = {}, {}
for i = 1, n do
  local at = 5 + 5 * (i - 1)
  local key = KEYS[i + 2]
  if full[i] then
    -- Nothing spent or held (a new period, or a refilled bucket refilled to
    -- its capacity): its soft limits may be reported again. Re-armed only
    -- here, a refilled bucket hovering about a limit reports it once, not
    -- at every call that crosses it.
    for _, field in ipairs(redis.call('HKEYS', key)) do
      if string.sub(field, 1, 6) == 'alert:' then
        redis.call('HDEL', key, field)
      end
    end
  end
  if fresh[i] then
    -- What the old period's calls hold left with its level; they give
    -- nothing back to this one (see SETTLE).
    redis.call('HSET', key, 'inflight', 0)
  end
  redis.call('HSET', key, 'level', levels[i], 'ts', stamps[i],
             'cap', ARGV[at + 1], 'period', periods[i])
  redis.call('HINCRBY', key, 'inflight', ARGV[at + 5])
  buckets[i], holds[i] = key, ARGV[at + 5]
end
redis.call('HSET', KEYS[1], 'estimate', ARGV[2], 'created', now,
           'buckets', table.concat(buckets, '\\n'),
           'periods', table.concat(periods, '\\n'),
           'holds', table.concat(holds, '\\n'), 'record', ARGV[5])
redis.call('PEXPIREAT', KEYS[1], tonumber(ARGV[3]) + 604800000)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
local reply = {1}
for i = 1, n do
  reply[i + 1] = levels[i]
end
return reply
"""

# KEYS[1]   reservation hash        tg:{t}:resv:<request_id>
# KEYS[2]   lease sorted set        tg:{t}:leases
# KEYS[3]   settled marker          tg:{t}:settled:<request_id>
# KEYS[4]   ledger stream           tg:{t}:ledger
# KEYS[5]   spend hash of the day   tg:{t}:spend:<yyyy-mm-dd>
# KEYS[6]   soft-limit event stream tg:{t}:events
# KEYS[7..] the bucket hashes the reservation holds, in reservation order
# ARGV[1]   request id
# ARGV[2]   cost, micro-USD; -1 charges the reserved estimate (lease expiry)
# ARGV[3]   settled-marker lifetime, s
# ARGV[4]   spend-hash lifetime, s
# ARGV[5]   spend field prefix (the attribution dimensions, encoded)
# ARGV[6]   input tokens, ARGV[7] output tokens
# ARGV[8]   '1' when the cost is an estimate, else '0'
# ARGV[9]   ledger length cap (approximate trimming)
# ARGV[10]  ledger detail (JSON of the call, without the cost)
# ARGV[11]  outcome word for the ledger (metered, estimated_cut, ...)
# ARGV[12]  now, ms since the epoch
# ARGV[13]  'held' to replace a reservation; 'direct' to charge a call that
#           was admitted without one (the store was unreachable then; if a
#           reservation stands all the same, made by a command whose reply
#           timed out, it is replaced like a held one, its hold given back);
#           'release' to give a reservation back whole and book nothing (the
#           gateway refused the call after reserving, so it never ran)
# ARGV[14..] two per bucket, in KEYS order: the amount actually used
#           (-1: what was held), soft limits as comma-separated percents;
#           a bucket holding the call is charged the used amount less its
#           hold; one that started afresh since the hold (its period id is
#           no longer the reservation's) only what was used beyond the hold;
#           then any further spend field prefixes (custom attribution), each
#           booked with the cost and one request
#           A 'held' settlement of a known cost whose reservation is gone
#           (Redis lost it) and that was not settled before is charged as
#           'direct' is: the call ran, so its cost is booked.
# Returns   {1, cost} settled now (cost 0 for a release)
#           {1, cost, 'lost'} settled now, though its reservation was gone
#           {0, 'settled'} this request was settled before: nothing changes
#           {0, 'unknown'} nothing held and nothing to charge (a release, or
#           a lease charge of an estimate Redis no longer has)
SETTLE = """
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {0, 'settled'}
end
local held = redis.call('HMGET', KEYS[1], 'estimate', 'periods', 'holds')
local estimate = tonumber(held[1])
local lost = ARGV[13] == 'held' and estimate == nil
if estimate == nil and ARGV[13] ~= 'release' and tonumber(ARGV[2]) >= 0 then
  -- No hold stands: the call was admitted without one, or Redis lost it
  -- (restarted without persistence, or evicted it). Unsettled all the same,
  -- the call is charged what it cost, on buckets that hold nothing for it.
  estimate, held = tonumber(ARGV[2]), {ARGV[2], nil, nil}
elseif estimate == nil then
  return {0, 'unknown'}
end

local function lines(text)
  local out = {}
  for line in string.gmatch((text or '') .. '\\n', '([^\\n]*)\\n') do
    table.insert(out, line)
  end
  return out
end

local cost = tonumber(ARGV[2])
if cost < 0 then
  cost = estimate
end
local periods, holds = lines(held[2]), lines(held[3])
for i = 7, #KEYS do
  local b = i - 6
  local hold = tonumber(holds[b]) or 0
  local used = tonumber(ARGV[12 + 2 * b])
  if used < 0 then
    used = hold
  end
  local state = redis.call('HMGET', KEYS[i], 'period', 'cap')
  local charge = used - hold
  local holding = (state[1] or '') == (periods[b] or '')
  if not holding then
    -- The bucket started afresh since the hold (a new period, another kind
    -- of budget): the level that paid the hold is gone with it, so the new
    -- one pays only what the call cost beyond what was held, and the call
    -- is not charged twice across a boundary.
    charge = math.max(charge, 0)
  end
  -- 0 - charge, not -charge: a negated zero is sent as '-0', which HINCRBY
  -- refuses.
  local level = redis.call('HINCRBY', KEYS[i], 'level', 0 - charge)
  local in_flight = tonumber(redis.call('HGET', KEYS[i], 'inflight')) or 0
  if holding and hold > 0 then
    in_flight = math.max(in_flight - hold, 0)
    redis.call('HSET', KEYS[i], 'inflight', in_flight)
  end
  local cap = tonumber(state[2])
  if cap ~= nil and level > cap then
    level = cap
    redis.call('HSET', KEYS[i], 'level', cap)
  end
  if cap ~= nil and cap > 0 then
    -- What calls still running hold is not spent: counting it would report
    -- a soft limit (once per period) that their refunds then undo.
    local spent = cap - level - math.max(in_flight, 0)
    for percent in string.gmatch(ARGV[13 + 2 * b], '([^,]+)') do
      local field = 'alert:' .. percent
      local marker = state[1] or ''
      if spent * 100 >= tonumber(percent) * cap then
        if redis.call('HEXISTS', KEYS[i], field) == 0 then
          redis.call('HSET', KEYS[i], field, marker)
          redis.call('XADD', KEYS[6], 'MAXLEN', '~', 100000, '*',
                     'bucket', KEYS[i], 'percent', percent, 'spent', spent,
                     'capacity', cap, 'period', marker, 'at_ms', ARGV[12])
        end
      end
    end
  end
end

redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[13] == 'release' then
  redis.call('SET', KEYS[3], 0, 'EX', tonumber(ARGV[3]))
  return {1, 0}
end
redis.call('SET', KEYS[3], cost, 'EX', tonumber(ARGV[3]))
local prefix = ARGV[5]
redis.call('HINCRBY', KEYS[5], prefix .. 'cost_micro_usd', cost)
redis.call('HINCRBY', KEYS[5], prefix .. 'requests', 1)
redis.call('HINCRBY', KEYS[5], prefix .. 'input_tokens', tonumber(ARGV[6]))
redis.call('HINCRBY', KEYS[5], prefix .. 'output_tokens', tonumber(ARGV[7]))
if ARGV[8] == '1' then
  redis.call('HINCRBY', KEYS[5], prefix .. 'estimated_cost_micro_usd', cost)
end
for j = 14 + 2 * (#KEYS - 6), #ARGV do
  redis.call('HINCRBY', KEYS[5], ARGV[j] .. 'cost_micro_usd', cost)
  redis.call('HINCRBY', KEYS[5], ARGV[j] .. 'requests', 1)
end
redis.call('EXPIRE', KEYS[5], tonumber(ARGV[4]))
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[9], '*', 'request_id', ARGV[1],
           'cost_micro_usd', cost, 'outcome', ARGV[11], 'detail', ARGV[10])
if lost then
  return {1, cost, 'lost'}
end
return {1, cost}
"""
