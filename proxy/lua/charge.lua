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
-- ARGV[3+i]   counter i: "kind whole rest amount period cost shadow", where
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
local reply, counters = {1}, {}

local function parse(text)
  local kind, whole, rest, amount, period, cost, shadow =
    string.match(text, "^(%a) (%-?%d+) (%d+) (%d+) (%d+) (%d+) (%d)$")
  return {
    kind = kind, whole = tonumber(whole), rest = tonumber(rest), amount = tonumber(amount),
    period = tonumber(period), cost = tonumber(cost), shadow = shadow == "1",
  }
end

local function read_rate(key, c)
  local tat_whole, tat_rest = c.whole, c.rest
  local stored = redis.call("GET", key)
  if stored then
    local w, r = string.match(stored, "^(-?%d+):(%d+)$")
    tat_whole, tat_rest = tonumber(w), tonumber(r)
  end
  local a, b = tat_whole - c.whole, tat_rest - c.rest
  if a < 0 or (a == 0 and b <= 0) then
    c.base_whole, c.base_rest = c.whole, c.rest -- nothing owed: a charge starts from now
  else
    c.base_whole, c.base_rest = tat_whole, tat_rest
  end
  return a, b, math.max(0, a + ((b > 0) and 1 or 0)) -- owed: whole units, rounded up
end

for i, key in ipairs(KEYS) do
  local c = parse(ARGV[3 + i])
  local a, b, owed
  if c.kind == "r" then
    a, b, owed = read_rate(key, c)
  else
    redis.call("ZREMRANGEBYSCORE", key, "-inf", now_ms)
    a, b = redis.call("ZCARD", key), 0
    owed = a
  end
  c.fits = owed + c.cost <= c.amount
  if not c.fits and not c.shadow then
    reply[1] = 0
  end
  counters[i] = c
  reply[#reply + 1] = a
  reply[#reply + 1] = b
  reply[#reply + 1] = c.fits and 1 or 0
end

local function charge_rate(key, c)
  local new_whole = c.base_whole + c.cost
  local ttl = math.ceil(((new_whole - c.whole) * c.period + (c.base_rest - c.rest)) / c.amount)
  redis.call("SET", key, string.format("%.0f:%.0f", new_whole, c.base_rest), "PX", ttl + 1000)
end

if reply[1] == 1 then
  for i, key in ipairs(KEYS) do
    local c = counters[i]
    if c.fits and c.cost > 0 then
      if c.kind == "r" then
        charge_rate(key, c)
      else
        redis.call("ZADD", key, now_ms + lease, token)
        redis.call("PEXPIRE", key, lease)
      end
    end
  end
end

return reply
