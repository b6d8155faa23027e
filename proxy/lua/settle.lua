-- settle.lua: give back what a request was charged, and free its concurrency slots.
-- The same rules in Python: proxy/store/memory_counters.py; times as in charge.lua.
--
-- KEYS[i]    counter i (one hash tag)
-- ARGV[1]    the request's token
-- ARGV[1+i]  counter i: "kind whole rest period cost after_whole after_rest", where
--   kind        "r" (a rate: give the charge back) or "s" (slots: free the token's slot)
--   whole rest  now on the counter's clock
--   period      the limit's period in ms
--   cost        units the request was charged
--   after_*     the counter's TAT right after the charge
-- A rate gets back only what is still outstanding of this charge, min(cost, after - now):
-- never allowance that time had already given back.

local token = ARGV[1]

local function normal(whole, rest, period)
  if rest < 0 then
    return whole - 1, rest + period
  end
  if rest >= period then
    return whole + 1, rest - period
  end
  return whole, rest
end

local function refund(key, whole, rest, period, cost, after_whole, after_rest)
  local stored = redis.call("GET", key)
  local back_whole, back_rest = normal(after_whole - whole, after_rest - rest, period)
  if not stored or back_whole < 0 or (back_whole == 0 and back_rest == 0) then
    return
  end
  if back_whole >= cost then
    back_whole, back_rest = cost, 0
  end
  local tat_whole, tat_rest = string.match(stored, "^(-?%d+):(%d+)$")
  local new_whole, new_rest =
    normal(tonumber(tat_whole) - back_whole, tonumber(tat_rest) - back_rest, period)
  if new_whole < whole or (new_whole == whole and new_rest <= rest) then
    redis.call("DEL", key)
  else
    redis.call("SET", key, string.format("%.0f:%.0f", new_whole, new_rest), "KEEPTTL")
  end
end

for i, key in ipairs(KEYS) do
  local kind, whole, rest, period, cost, after_whole, after_rest =
    string.match(ARGV[1 + i], "^(%a) (%-?%d+) (%d+) (%d+) (%d+) (%-?%d+) (%d+)$")
  if kind == "s" then
    redis.call("ZREM", key, token)
  else
    refund(key, tonumber(whole), tonumber(rest), tonumber(period), tonumber(cost),
      tonumber(after_whole), tonumber(after_rest))
  end
end

return 1
