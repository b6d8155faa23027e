-- POST /v1/images/generations with a small JSON body and the bench client key.
wrk.method = "POST"
wrk.path = "/v1/images/generations"
wrk.body = '{"prompt": "A cute baby sea otter", "n": 1, "size": "1024x1024"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer tg-bench-key"
