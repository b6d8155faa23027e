-- POST /v1/images/generations with a different prompt on every request: every moderation
-- verdict is a miss (cold), so each image request costs a moderation call upstream.
wrk.method = "POST"
wrk.path = "/v1/images/generations"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer tg-bench-key"
local counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{"prompt": "A cute baby sea otter number %d-%d", "n": 1}',
    counter, math.random(1, 1000000000))
  return wrk.format(nil, nil, nil, body)
end
