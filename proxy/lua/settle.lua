-- settle.lua: give back what a request was charged, and free its concurrency slots.
-- The same rules in Python: proxy/store/memory_counters.py; times as in charge.lua.
--
-- KEYS[i]  counter i (one hash tag)
-- ARGV[1]  the request's token
-- then seven values per counter:
--   kind          "r" (a rate: give the charge back) or "s" (slots: free the token's slot)
--   whole rest    now on the counter's clock
--   period        the limit's period in ms
--   cost          units the request was charged
--   whole rest    the counter's TAT right after the charge
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

local function refund(key, at)
  local whole, rest = tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
  local period, cost = tonumber(ARGV[at + 4]), tonumber(ARGV[at + 5])
  local back_whole, back_rest =
    normal(tonumber(ARGV[at + 6]) - whole, tonumber(ARGV[at + 7]) - rest, period)
  local stored = redis.call("GET", key)
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
  local at = 1 + (i - 1) * 7
  if ARGV[at + 1] == "s" then
    redis.call("ZREM", key, token)
  else
    refund(key, at)
  end
end

return 1
