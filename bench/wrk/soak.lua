-- bench/rss_soak.sh: the three bench requests in turn (GET /v1/models, cached by Tollgate;
-- POST /v1/moderations, passed through; POST /v1/images/generations, moderated with its
-- verdict cached). Each thread stops once it has had its share of the responses asked for,
-- and appends a line to DONE_FILE: wrk itself runs on until its -d, so the caller waits for
-- one line per thread, then stops wrk with SIGINT (which prints the summary as usual).
--   wrk -t THREADS -s bench/wrk/soak.lua URL -- TOTAL THREADS DONE_FILE
local requests = {}
local wanted = 0
local done_file = nil
local sent = 0
local answered = 0

function init(args)
  local total, threads = tonumber(args[1]), tonumber(args[2])
  done_file = args[3]
  if total == nil or threads == nil or threads < 1 or done_file == nil then
    error("usage: wrk -s soak.lua URL -- TOTAL THREADS DONE_FILE")
  end
  wanted = math.ceil(total / threads)
  -- Built here, not at load time: wrk.format takes the Host header from wrk.headers, which
  -- wrk fills in only before init.
  local auth = "Bearer tg-bench-key"
  requests[1] = wrk.format("GET", "/v1/models", {["Authorization"] = auth})
  requests[2] = wrk.format("POST", "/v1/moderations",
    {["Authorization"] = auth, ["Content-Type"] = "application/json"},
    '{"input": "I want to kill them.", "model": "omni-moderation-latest"}')
  requests[3] = wrk.format("POST", "/v1/images/generations",
    {["Authorization"] = auth, ["Content-Type"] = "application/json"},
    '{"prompt": "A cute baby sea otter", "n": 1, "size": "1024x1024"}')
end

function request()
  sent = sent + 1
  return requests[(sent % #requests) + 1]
end

function response(status, headers, body)
  answered = answered + 1
  if answered == wanted then
    local file = io.open(done_file, "a")
    file:write("done\n")
    file:close()
    wrk.thread:stop()
  end
end
