#!/usr/bin/env bash
# Cache benchmark: requests/second and p50/p99 latency, measured with wrk, of a cached
# `GET /v1/models` in one run, over six paths, one server process each:
#   direct           the canned nginx upstream itself (reference)
#   floor            bench/floor.py, pass-through: the floor for any Python proxy
#   tollgate         Tollgate pass-through: a Tollgate started with TOLLGATE_CACHE__ENABLED=false
#   tollgate-memory  Tollgate cached, default settings (memory store)
#   tollgate-redis   Tollgate cached, TOLLGATE_STORE=redis on a redis-server started here
#   nginx-cache      nginx proxy_cache in front of the canned upstream: the floor for any
#                    caching proxy
# Every path gets the same bytes (bench/wrk/models.lua). Before a cached path is measured, one
# curl fills its cache and a second must answer with its hit header (x-tollgate-cache: hit,
# x-cache-status: HIT). The canned upstream's stub_status is read around every measured run,
# so the report shows how many requests reached the upstream: 0 on the cached paths, or the
# run is flagged.
#
# Usage: bash bench/cache.sh          (from any directory)
# Env:   BENCH_DURATION=10s  BENCH_CONNECTIONS=32  BENCH_THREADS=1
#
# CPU pinning (as in run.sh): the servers, the canned upstream and redis-server run on core 0,
# wrk on core 1. Safety: everything listens on 127.0.0.1 only, each wrk run is bounded by its
# duration (and by `timeout`), and every process started here is stopped on exit (trap EXIT).
# The helpers are in bench/lib.sh, shared with run.sh.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init
OUT=bench/results/cache-$DATE.md
SCRIPT=bench/wrk/models.lua
AUTH=(-H "Authorization: Bearer $CLIENT_KEY")

# --- counters read around each measured run (upstream_count is in lib.sh) -----------------
REDIS_PORT=""
redis_calls() {  # redis_calls COMMAND: how often redis-server has run COMMAND (get, set...)
  timeout 5 "$REDIS_CLI" -h 127.0.0.1 -p "$REDIS_PORT" info commandstats \
    | tr -d '\r' | sed -n "s/^cmdstat_$1:calls=\([0-9]*\),.*/\1/p" | grep . || echo 0
}

mark_start() {  # the hook between warm-up and measured run
  UPSTREAM_START=$(upstream_count)
  if [[ -n $REDIS_PORT ]]; then
    REDIS_GET_START=$(redis_calls get)
    REDIS_SET_START=$(redis_calls set)
  fi
}

# measure NAME URL: warm-up, measured run, and the requests that reached the upstream during
# the measured run (less the stub_status read that ends it) in $TMP/raw/NAME.upstream.
measure() {
  local name=$1 url=$2 end
  wrk_run "$name" "$TMP/raw/$name.txt" "$url" "$SCRIPT" mark_start
  end=$(upstream_count)
  if [[ -n $UPSTREAM_START && -n $end ]]; then
    echo $(( end - UPSTREAM_START - 1 )) >"$TMP/raw/$name.upstream"
  fi
  if [[ -n $REDIS_PORT ]]; then
    echo "redis-server ran $(( $(redis_calls get) - REDIS_GET_START )) GET and" \
      "$(( $(redis_calls set) - REDIS_SET_START )) SET (fill or lock) during the measured run" \
      >"$TMP/raw/$name.note"
  fi
}

fill() {  # fill NAME URL: the request that fills a cache; its cache header, for the log
  local name=$1 url=$2 header
  header=$(curl -s -o /dev/null -D - --max-time 10 "${AUTH[@]}" "$url" | tr -d '\r' \
    | grep -i -E '^x-(tollgate-cache|cache-status):' || true)
  echo "  $name: fill request answered ${header:-without a cache header}" >&2
}

# --- upstream: canned nginx, with stub_status to count what reaches it --------------------
start_canned_upstream

# --- machine and parameters ---------------------------------------------------------------
write_meta "$TMP/meta.txt" "per path"
REDIS_PY=$("$PY" -c 'import redis; print(redis.__version__)')
HIREDIS=$("$PY" -c 'import hiredis; print(hiredis.__version__)' 2>/dev/null || echo none)
{
  echo "request=GET /v1/models with Authorization: Bearer $CLIENT_KEY (bench/wrk/models.lua), the same bytes on every path"
  echo "tollgate env=TOLLGATE_LOG__FORMAT=json (stdout to /dev/null), config bench/tollgate.bench.yaml; pass-through: TOLLGATE_CACHE__ENABLED=false; cached: default cache settings (TTL 300 s), TOLLGATE_STORE=memory or redis"
  echo "redis=redis-server $("${REDIS_SERVER:-redis-server}" --version | sed -n 's/.* v=\([^ ]*\).*/\1/p') on 127.0.0.1 (--save '' --appendonly no), on the servers' core; redis-py $REDIS_PY, hiredis $HIREDIS"
  echo "nginx proxy_cache=a second nginx (worker_processes 1): proxy_cache_path in the temp dir, proxy_cache_valid 200 5m, proxy_cache_key \$http_authorization\$request_uri, keepalive 32 to the canned upstream"
  echo "hits=checked before each cached run (curl: x-tollgate-cache: hit / x-cache-status: HIT) and during it (canned upstream's stub_status: requests that reached it)"
} >>"$TMP/meta.txt"

# --- a. direct ----------------------------------------------------------------------------
echo "direct: nginx on $UPSTREAM" >&2
check_http direct "direct GET /v1/models" "$UPSTREAM/v1/models" "" "${AUTH[@]}"
measure direct "$UPSTREAM/v1/models"

# --- b. floor -----------------------------------------------------------------------------
start_floor
check_http floor "floor GET /v1/models" "$FLOOR_URL/v1/models" "" "${AUTH[@]}"
measure floor "$FLOOR_URL/v1/models"
stop_server "$FLOOR_PID"

# --- c. Tollgate pass-through: the cache switched off -------------------------------------
start_tollgate tollgate bench/tollgate.bench.yaml TOLLGATE_CACHE__ENABLED=false
check_http tollgate "tollgate (cache off) GET /v1/models" "$TOLLGATE_URL/v1/models" "" "${AUTH[@]}"
measure tollgate "$TOLLGATE_URL/v1/models"
stop_tollgate tollgate

# --- d. Tollgate cached, memory store -----------------------------------------------------
start_tollgate tollgate-memory bench/tollgate.bench.yaml
fill tollgate-memory "$TOLLGATE_URL/v1/models"
check_http tollgate-memory "tollgate-memory GET /v1/models" "$TOLLGATE_URL/v1/models" \
  "x-tollgate-cache: hit" "${AUTH[@]}"
measure tollgate-memory "$TOLLGATE_URL/v1/models"
stop_tollgate tollgate-memory

# --- e. Tollgate cached, redis store ------------------------------------------------------
start_redis
start_tollgate tollgate-redis bench/tollgate.bench.yaml TOLLGATE_STORE=redis \
  TOLLGATE_REDIS__URL="$REDIS_URL"
fill tollgate-redis "$TOLLGATE_URL/v1/models"
check_http tollgate-redis "tollgate-redis GET /v1/models" "$TOLLGATE_URL/v1/models" \
  "x-tollgate-cache: hit" "${AUTH[@]}"
measure tollgate-redis "$TOLLGATE_URL/v1/models"
stop_tollgate tollgate-redis
stop_server "$REDIS_PID"
REDIS_PORT=""

# --- f. nginx proxy_cache in front of the canned upstream ---------------------------------
start_nginx_proxy nginx-cache "
      proxy_cache bench;
      proxy_cache_valid 200 5m;
      proxy_cache_key \$http_authorization\$request_uri;
      proxy_cache_lock on;
      add_header x-cache-status \$upstream_cache_status always;" "
  proxy_cache_path $TMP/nginx-cache/cache levels=1:2 keys_zone=bench:1m max_size=16m
                   inactive=10m use_temp_path=off;"
CACHE_PID=$PROXY_PID
CACHE_URL=$PROXY_URL
fill nginx-cache "$CACHE_URL/v1/models"
check_http nginx-cache "nginx-cache GET /v1/models" "$CACHE_URL/v1/models" \
  "x-cache-status: HIT" "${AUTH[@]}"
measure nginx-cache "$CACHE_URL/v1/models"
stop_server "$CACHE_PID"

stop_server "$NGINX_PID"
load_after "$TMP/meta.txt"

# --- report -------------------------------------------------------------------------------
report_status=0
"$PY" bench/cache_report.py "$TMP/raw" --meta "$TMP/meta.txt" --out "$OUT" || report_status=$?
echo >&2
echo "written: $OUT" >&2
if (( report_status != 0 )); then
  echo "!!!! some runs had problems (errors, failed checks, or cached runs that were not all hits): see the report" >&2
fi
exit "$report_status"
