#!/usr/bin/env bash
# The benchmark matrix of issue 9, in one run: five paths, three requests, one worker each.
#
# Paths (one server process each, the canned nginx upstream behind all but the first):
#   direct           wrk straight to the canned nginx upstream (reference)
#   nginx-proxy      a second nginx proxy_pass'ing to it over upstream keep-alive connections
#   floor            bench/floor.py, the bare aiohttp forwarder
#   tollgate-memory  Tollgate, memory store, bench/tollgate.scale.yaml
#   tollgate-redis   the same on the Redis store (a redis-server started here)
# Requests (bench/wrk/<name>.lua; the same bytes on every path, with the bench client key):
#   models       GET /v1/models: cached by Tollgate (every measured request a hit)
#   moderations  POST /v1/moderations: passed through
#   images       POST /v1/images/generations: moderation on, its verdict cached (same prompt)
# Tollgate runs with auth (the bench key) and a full set of quotas far above what a run uses
# (bench/tollgate.scale.yaml), so every request is authenticated, checked and charged.
#
# Each (path, request): a warm-up, throughput and p50/p99 at BENCH_CONNECTIONS (32), then
# p50/p99 at 1 connection. Before it, curl checks the answer (on Tollgate: the quota headers,
# and a cache hit for models); around the measured run the canned upstream's stub_status
# counts what reached it (0 per request for cached models, 1 for the images, whose moderation
# verdict must come from the cache). bench/scale_report.py writes the report with the rps,
# the ratios, the latency each path adds over direct, and the issue's targets, met or missed.
#
# Usage: bash bench/scale.sh           (from any directory; about 7 minutes with the defaults)
# Env:   BENCH_DURATION=15s          measured run at BENCH_CONNECTIONS, per path and request
#        BENCH_LATENCY_DURATION=5s   run at 1 connection, per path and request
#        BENCH_CONNECTIONS=32  BENCH_THREADS=1  BENCH_REDIS_TIMEOUT=0.5
#        e.g. BENCH_DURATION=2s BENCH_LATENCY_DURATION=1s bash bench/scale.sh   (a quick trial)
#
# Pinning (2+ cores and taskset): nginx, the proxies and Tollgate on core 0, wrk on core 1,
# and redis-server on core 1 too: it stands in for a Redis on another machine, so it must not
# take the proxy's core. Redis timeout: under saturation the event loop can take longer than
# the 50 ms default to get to a reply; BENCH_REDIS_TIMEOUT (0.5 s) keeps that from turning
# into fail_closed 503s or cache misses (both would be flagged). Everything listens on
# 127.0.0.1, each wrk run is bounded by `timeout`, and every process started here stops on
# exit. The helpers are in bench/lib.sh.
set -euo pipefail

: "${BENCH_DURATION:=15s}"
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init
LATENCY_DURATION=${BENCH_LATENCY_DURATION:-5s}
duration_seconds BENCH_LATENCY_DURATION "$LATENCY_DURATION" >/dev/null
REDIS_TIMEOUT=${BENCH_REDIS_TIMEOUT:-0.5}
CONFIG=bench/tollgate.scale.yaml
REQUESTS=(models moderations images)
OUT=bench/results/scale-$DATE.md
QUOTA_HEADER="x-ratelimit-limit-requests: 100000000"

# --- one path ------------------------------------------------------------------------------
mark_upstream() { UPSTREAM_START=$(upstream_count); }  # the hook between warm-up and run

# measure NAME BASE REQ: the run at CONNECTIONS (after a warm-up), the requests that reached
# the canned upstream meanwhile (less the stub_status read that ends it) in NAME-REQ.upstream,
# then the run at 1 connection in NAME-REQ.c1.txt.
measure() {
  local name=$1 base=$2 req=$3 url end
  url=$base$(request_path "$req")
  wrk_run "$name $req" "$TMP/raw/$name-$req.txt" "$url" "bench/wrk/$req.lua" mark_upstream
  end=$(upstream_count)
  if [[ -n $UPSTREAM_START && -n $end ]]; then
    echo $(( end - UPSTREAM_START - 1 )) >"$TMP/raw/$name-$req.upstream"
  fi
  echo "  $name $req: 1 connection, $LATENCY_DURATION" >&2
  wrk_once 1 "$LATENCY_DURATION" "$TMP/raw/$name-$req.c1.txt" "$url" "bench/wrk/$req.lua"
}

# counters NAME: Tollgate's own non-zero counters of statuses and store errors, kept for the
# report (they say what went wrong when wrk counts non-2xx answers).
counters() {
  curl -s --max-time 5 "$TOLLGATE_URL/metrics" \
    | grep -E '^tollgate_(requests|quota_store_errors|cache_store_errors|quota_refusals|quota_bypasses|moderation_strike_store_errors|upstream_errors)_total' \
    | grep -v ' 0\.0$' >"$TMP/raw/$1.counters" || true
}

bench_path() {  # bench_path NAME BASE [tollgate]: check, then measure, every request
  local name=$1 base=$2 tollgate=${3:-} req expect
  for req in "${REQUESTS[@]}"; do
    expect=""
    if [[ -n $tollgate ]]; then
      expect=$QUOTA_HEADER
      case $req in
        models)  # the first fills the cache; the check must then see a hit
          check_request "$name" "$base" "$req" >/dev/null 2>&1 || true
          expect="x-tollgate-cache: hit; $expect" ;;
        images) expect="$expect; x-ratelimit-limit-images: 100000000" ;;
      esac
    fi
    check_request "$name" "$base" "$req" "$expect"
  done
  for req in "${REQUESTS[@]}"; do
    measure "$name" "$base" "$req"
  done
}

# --- the canned upstream, and the parameters -------------------------------------------------
start_canned_upstream
[[ -n ${PIN_WRK[*]} ]] && PINNING="$PINNING; redis-server on core 1 too"
write_meta "$TMP/meta.txt" "per path and request at $CONNECTIONS connections, then $LATENCY_DURATION at 1 connection"
{
  echo "requests=GET /v1/models (Tollgate: cached), POST /v1/moderations (pass-through), POST /v1/images/generations (Tollgate: moderation on, verdict cached); bench/wrk/*.lua, the same bytes on every path, Authorization: Bearer $CLIENT_KEY"
  echo "nginx proxy=a second nginx (worker_processes 1): proxy_pass to the canned upstream, proxy_http_version 1.1, upstream keepalive 32"
  echo "tollgate config=$CONFIG (auth, user and team quotas far above the run, moderation on), default cache settings, TOLLGATE_LOG__FORMAT=json (stdout to /dev/null); redis path: TOLLGATE_STORE=redis, TOLLGATE_REDIS__TIMEOUT=$REDIS_TIMEOUT"
  echo "checks=curl before each run (Tollgate: x-ratelimit-* headers, x-tollgate-cache: hit on models); the canned upstream's stub_status around each run at $CONNECTIONS connections"
} >>"$TMP/meta.txt"

# --- direct, nginx proxy, floor ------------------------------------------------------------
echo "direct: nginx on $UPSTREAM" >&2
bench_path direct "$UPSTREAM"

start_nginx_proxy nginx-proxy
bench_path nginx-proxy "$PROXY_URL"
stop_server "$PROXY_PID"

start_floor
bench_path floor "$FLOOR_URL"
stop_server "$FLOOR_PID"

# --- Tollgate: memory store, then Redis ------------------------------------------------------
start_tollgate tollgate-memory "$CONFIG" TOLLGATE_STORE=memory
bench_path tollgate-memory "$TOLLGATE_URL" tollgate
counters tollgate-memory
stop_tollgate tollgate-memory

start_redis side
echo "redis=redis-server $REDIS_VERSION on 127.0.0.1 (--save '' --appendonly no), on wrk's core; redis-py $("$PY" -c 'import redis; print(redis.__version__)')" \
  >>"$TMP/meta.txt"
start_tollgate tollgate-redis "$CONFIG" TOLLGATE_STORE=redis TOLLGATE_REDIS__URL="$REDIS_URL" \
  TOLLGATE_REDIS__TIMEOUT="$REDIS_TIMEOUT"
bench_path tollgate-redis "$TOLLGATE_URL" tollgate
counters tollgate-redis
stop_tollgate tollgate-redis
stop_server "$REDIS_PID"

stop_server "$NGINX_PID"
load_after "$TMP/meta.txt"

# --- report ----------------------------------------------------------------------------------
report_status=0
"$PY" bench/scale_report.py "$TMP/raw" --meta "$TMP/meta.txt" --connections "$CONNECTIONS" \
  --out "$OUT" || report_status=$?
echo >&2
echo "written: $OUT" >&2
if (( report_status != 0 )); then
  echo "!!!! some runs had problems (errors, failed checks, or upstream counts off): see the report" >&2
fi
exit "$report_status"
