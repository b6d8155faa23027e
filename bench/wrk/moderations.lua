-- POST /v1/moderations with a small JSON body and the bench client key.
wrk.method = "POST"
wrk.path = "/v1/moderations"
wrk.body = '{"input": "I want to kill them.", "model": "omni-moderation-latest"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer tg-bench-key"
