-- charge.lua: check and charge every counter of one hash tag, all or nothing, atomically.
-- Why GCRA and how the counters work: proxy/limiter.py. The same rules in Python, for the
-- embedded store: proxy/store/memory_counters.py.
--
-- A rate's clock runs in 1/amount ms, so one unit of allowance is `period` on it. Times on
-- it are pairs (whole units, rest below period) that are only added and compared: Lua's
-- numbers are doubles, and every value here stays an exact integer. The key holds the
-- rate's theoretical arrival time (TAT) as "whole:rest".
--
-- KEYS[i]     counter i; all keys share one {hash tag}, so this works on Redis Cluster
-- ARGV[1..3]  now (ms), the request's token, how long a concurrency slot is leased (ms)
-- then seven values per counter:
--   kind        "r": a rate (GCRA);  "s": concurrency slots, a sorted set of tokens scored
--               by the end of their lease (ms)
--   whole rest  now on the counter's clock (rates)
--   amount      what the limit allows, in units
--   period      the limit's period in ms (rates)
--   cost        units this request takes (0: read only)
--   shadow      "1": a refusal is reported, never enforced
-- Returns {admitted, a_1, b_1, fits_1, a_2, b_2, fits_2, ...}: admitted is 1 when nothing
-- enforced refused. For a rate, TAT - now = a + b/period before this request (negative when
-- nothing is owed); for slots, a is the number in flight. fits is 1 when the request fits.

local now_ms, token, lease = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local reply, tats, fits = {1}, {}, {}

local function tat_of(key, whole, rest)
  local stored = redis.call("GET", key)
  if not stored then
    return whole, rest
  end
  local w, r = string.match(stored, "^(-?%d+):(%d+)$")
  return tonumber(w), tonumber(r)
end

local function read_rate(i, key, at)
  local whole, rest = tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
  local tat_whole, tat_rest = tat_of(key, whole, rest)
  local a, b = tat_whole - whole, tat_rest - rest
  local owed = math.max(0, a + ((b > 0) and 1 or 0)) -- whole units owed, rounded up
  tats[i] = (a < 0 or (a == 0 and b <= 0)) and {whole, rest} or {tat_whole, tat_rest}
  return a, b, owed
end

for i, key in ipairs(KEYS) do
  local at = 3 + (i - 1) * 7
  local amount, cost = tonumber(ARGV[at + 4]), tonumber(ARGV[at + 6])
  local a, b, owed
  if ARGV[at + 1] == "r" then
    a, b, owed = read_rate(i, key, at)
  else
    redis.call("ZREMRANGEBYSCORE", key, "-inf", now_ms)
    a, b = redis.call("ZCARD", key), 0
    owed = a
  end
  fits[i] = owed + cost <= amount
  if not fits[i] and ARGV[at + 7] ~= "1" then
    reply[1] = 0
  end
  reply[#reply + 1] = a
  reply[#reply + 1] = b
  reply[#reply + 1] = fits[i] and 1 or 0
end

local function charge_rate(i, key, at, cost)
  local whole, rest = tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
  local amount, period = tonumber(ARGV[at + 4]), tonumber(ARGV[at + 5])
  local new_whole, new_rest = tats[i][1] + cost, tats[i][2]
  local ttl = math.ceil(((new_whole - whole) * period + (new_rest - rest)) / amount) + 1000
  local value = string.format("%.0f:%.0f", new_whole, new_rest)
  redis.call("SET", key, value, "PX", ttl)
end

if reply[1] == 1 then
  for i, key in ipairs(KEYS) do
    local at = 3 + (i - 1) * 7
    local cost = tonumber(ARGV[at + 6])
    if fits[i] and cost > 0 then
      if ARGV[at + 1] == "r" then
        charge_rate(i, key, at, cost)
      else
        redis.call("ZADD", key, now_ms + lease, token)
        redis.call("PEXPIRE", key, lease)
      end
    end
  end
end

return reply
