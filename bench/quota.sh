#!/usr/bin/env bash
# Quota benchmark: what enforcing quotas costs Tollgate, as requests/second with limits over
# requests/second without, measured with wrk against the nginx upstream of bench/run.sh.
#
# Paths (one Tollgate process each, same upstream, same client key):
#   unlimited    memory store, bench/tollgate.bench.yaml: no limits (the baseline)
#   memory       memory store, bench/tollgate.quota.yaml: user rates, images, spend,
#                concurrency, and a team spend limit
#   redis        the same policy on the Redis store (a redis-server started here)
#   redis-rates  Redis store, bench/tollgate.quota-rates.yaml: user rates only (one round trip)
# Requests: GET /v1/models and POST /v1/images/generations (as in bench/run.sh).
#
# Besides rps, each run records the CPU time Tollgate used (/proc/PID/stat) per request
# served: on a shared machine, where other work takes the proxy's core now and then, CPU per
# request is the steadier measure of what quotas cost.
#
# Usage: bash bench/quota.sh            (from any directory)
# Env:   BENCH_DURATION=10s  BENCH_CONNECTIONS=32  BENCH_THREADS=1
#
# Pinning (2+ cores and taskset): nginx and Tollgate on core 0, wrk on core 1, and Redis on
# core 1 too: it stands in for a Redis on another machine, so it must not take the proxy's
# core. Everything listens on 127.0.0.1; every process started here stops on exit. The helpers
# (canned upstream, starting Tollgate and redis-server, wrk runs, checks) are in bench/lib.sh.
#
# Store timeout: wrk keeps Tollgate saturated, where the event loop alone can take longer
# than the 50 ms default to get to a Redis reply; the runs use TOLLGATE_REDIS__TIMEOUT=0.5
# (BENCH_REDIS_TIMEOUT) so that saturation is measured, not turned into fail_closed 503s.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init
REDIS_TIMEOUT=${BENCH_REDIS_TIMEOUT:-0.5}
REQUESTS=(models images)
OUT=bench/results/quota-$DATE.md

cpu_ticks() {  # cpu_ticks PID: user + system CPU time of the process, in clock ticks
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}

mark_cpu() { CPU_START=$(cpu_ticks "$TOLLGATE_PID"); }  # the hook between warm-up and run

bench_path() {  # bench_path NAME: every request through TOLLGATE_URL, with its CPU time
  local name=$1 req url
  for req in "${REQUESTS[@]}"; do
    check_request "$name" "$TOLLGATE_URL" "$req"
  done
  for req in "${REQUESTS[@]}"; do
    url=$TOLLGATE_URL$(request_path "$req")
    wrk_run "$name $req" "$TMP/raw/$name-$req.txt" "$url" "bench/wrk/$req.lua" mark_cpu
    echo "$(( $(cpu_ticks "$TOLLGATE_PID") - CPU_START )) $(getconf CLK_TCK)" \
      >"$TMP/raw/$name-$req.cpu"
  done
}

run_tollgate() {  # run_tollgate NAME STORE POLICY
  local name=$1 store=$2 policy=$3
  start_tollgate "$name" "$policy" TOLLGATE_STORE="$store" TOLLGATE_REDIS__URL="$REDIS_URL" \
    TOLLGATE_REDIS__TIMEOUT="$REDIS_TIMEOUT"
  bench_path "$name"
  stop_tollgate "$name"
  echo "$name=store $store, config $policy" >>"$TMP/paths.txt"
}

# --- the canned nginx upstream, and Redis on wrk's core ------------------------------------
start_canned_upstream
start_redis side
[[ -n ${PIN_WRK[*]} ]] && PINNING="$PINNING; redis-server on core 1 too"
write_meta "$TMP/meta.txt" "per request and path"

run_tollgate unlimited memory bench/tollgate.bench.yaml
run_tollgate memory memory bench/tollgate.quota.yaml
run_tollgate redis redis bench/tollgate.quota.yaml
run_tollgate redis-rates redis bench/tollgate.quota-rates.yaml

{
  echo "redis=$REDIS_VERSION (redis-server on core 1, with wrk: it stands in for a Redis on another machine)"
  echo "tollgate env=TOLLGATE_LOG__FORMAT=json to /dev/null; cache on (default settings); moderation as each policy file says (tollgate.bench.yaml: off; the quota files: the default, on)"
  echo "redis timeout=$REDIS_TIMEOUT s (TOLLGATE_REDIS__TIMEOUT; failure mode fail_closed)"
  cat "$TMP/paths.txt"
} >>"$TMP/meta.txt"
load_after "$TMP/meta.txt"

report_status=0
"$PY" bench/quota_report.py "$TMP/raw" --meta "$TMP/meta.txt" --out "$OUT" || report_status=$?
echo "written: $OUT" >&2
exit "$report_status"
