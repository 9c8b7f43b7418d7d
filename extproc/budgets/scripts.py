"""The Lua scripts that do all budget arithmetic atomically in Redis.

Every key a script touches carries the tenant's hash tag (``{tenant}``), so
each script runs on one Redis Cluster slot. Amounts are integer micro-USD;
Lua numbers are doubles, exact for integers below 2**53 (9e9 USD).

A bucket is a hash with fields ``level`` (micro-USD available, may go below
zero when a call costs more than its estimate), ``ts`` (ms of the last
refill), ``cap`` and ``period`` (the calendar period id; empty for a
continuously refilled bucket).
"""

# KEYS[1]   reservation hash        tg:{t}:resv:<request_id>
# KEYS[2]   lease sorted set        tg:{t}:leases
# KEYS[3..] bucket hashes, one per scope that applies
# ARGV[1]   now, ms since the epoch
# ARGV[2]   estimate, micro-USD
# ARGV[3]   lease deadline, ms since the epoch
# ARGV[4]   request id
# ARGV[5]   attribution record (opaque string kept with the reservation)
# ARGV[6..] four per bucket, in KEYS order: capacity, refill amount,
#           refill period ms, calendar period id ('' for a refilled bucket)
# Returns   {1} held on every bucket
#           {0, i, level} bucket i (1-based) cannot hold it; nothing is held
#           {-1} a reservation with this request id already exists
RESERVE = """
local now = tonumber(ARGV[1])
local estimate = tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {-1}
end

local n = #KEYS - 2
local levels, stamps = {}, {}
for i = 1, n do
  local at = 5 + 4 * (i - 1)
  local cap, amount = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  local period_ms, period_id = tonumber(ARGV[at + 3]), ARGV[at + 4]
  local state = redis.call('HMGET', KEYS[i + 2], 'level', 'ts', 'period')
  local level, ts = tonumber(state[1]), tonumber(state[2])
  if level == nil or (period_id ~= '' and state[3] ~= period_id) then
    level, ts = cap, now
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
  if estimate > 0 and level < estimate then
    return {0, i, level}
  end
  levels[i], stamps[i] = level, ts
end

local buckets, periods = {}, {}
for i = 1, n do
  local at = 5 + 4 * (i - 1)
  redis.call('HSET', KEYS[i + 2], 'level', levels[i] - estimate, 'ts', stamps[i],
             'cap', ARGV[at + 1], 'period', ARGV[at + 4])
  buckets[i], periods[i] = KEYS[i + 2], ARGV[at + 4]
end
redis.call('HSET', KEYS[1], 'estimate', estimate, 'created', now,
           'buckets', table.concat(buckets, '\\n'),
           'periods', table.concat(periods, '\\n'), 'record', ARGV[5])
redis.call('PEXPIREAT', KEYS[1], tonumber(ARGV[3]) + 604800000)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return {1}
"""

# KEYS[1]   reservation hash        tg:{t}:resv:<request_id>
# KEYS[2]   lease sorted set        tg:{t}:leases
# KEYS[3]   settled marker          tg:{t}:settled:<request_id>
# KEYS[4]   ledger stream           tg:{t}:ledger
# KEYS[5]   spend hash of the day   tg:{t}:spend:<yyyy-mm-dd>
# KEYS[6..] the bucket hashes the reservation holds, in reservation order
# ARGV[1]   request id
# ARGV[2]   cost, micro-USD; -1 charges the reserved estimate (lease expiry)
# ARGV[3]   settled-marker lifetime, s
# ARGV[4]   spend-hash lifetime, s
# ARGV[5]   spend field prefix (the attribution dimensions, encoded)
# ARGV[6]   input tokens, ARGV[7] output tokens
# ARGV[8]   '1' when the cost is an estimate, else '0'
# ARGV[9]   ledger length cap (approximate trimming)
# ARGV[10]  ledger detail (JSON of the call, without the cost)
# ARGV[11]  outcome word for the ledger (metered, estimated, lease_expired, ...)
# Returns   {1, cost} settled now
#           {0, 'settled'} this request was settled before: nothing changes
#           {0, 'unknown'} no reservation with this id: nothing changes
SETTLE = """
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {0, 'settled'}
end
local held = redis.call('HMGET', KEYS[1], 'estimate', 'periods')
local estimate = tonumber(held[1])
if estimate == nil then
  return {0, 'unknown'}
end

local cost = tonumber(ARGV[2])
if cost < 0 then
  cost = estimate
end
local periods = {}
for period in string.gmatch((held[2] or '') .. '\\n', '([^\\n]*)\\n') do
  table.insert(periods, period)
end
for i = 6, #KEYS do
  local state = redis.call('HMGET', KEYS[i], 'period', 'cap')
  local refund = estimate
  if (state[1] or '') ~= (periods[i - 5] or '') then
    refund = 0
  end
  local level = redis.call('HINCRBY', KEYS[i], 'level', refund - cost)
  local cap = tonumber(state[2])
  if cap ~= nil and level > cap then
    redis.call('HSET', KEYS[i], 'level', cap)
  end
end

redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], cost, 'EX', tonumber(ARGV[3]))
local prefix = ARGV[5]
redis.call('HINCRBY', KEYS[5], prefix .. 'cost_micro_usd', cost)
redis.call('HINCRBY', KEYS[5], prefix .. 'requests', 1)
redis.call('HINCRBY', KEYS[5], prefix .. 'input_tokens', tonumber(ARGV[6]))
redis.call('HINCRBY', KEYS[5], prefix .. 'output_tokens', tonumber(ARGV[7]))
if ARGV[8] == '1' then
  redis.call('HINCRBY', KEYS[5], prefix .. 'estimated_cost_micro_usd', cost)
end
redis.call('EXPIRE', KEYS[5], tonumber(ARGV[4]))
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[9], '*', 'request_id', ARGV[1],
           'cost_micro_usd', cost, 'outcome', ARGV[11], 'detail', ARGV[10])
return {1, cost}
"""
