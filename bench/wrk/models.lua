-- GET /v1/models with the bench client key.
wrk.method = "GET"
wrk.path = "/v1/models"
wrk.headers["Authorization"] = "Bearer tg-bench-key"
