#!/usr/bin/env bash
# Memory soak: 1,000,000 requests through one Tollgate worker, its resident memory (VmRSS in
# /proc/PID/status) sampled after every 100,000 and every few seconds meanwhile. Target (issue
# 9): RSS after 1,000,000 requests within 10% of RSS after 100,000. bench/rss_report.py writes
# bench/results/rss-<date>.md with the samples and the verdict.
#
# The requests (bench/wrk/soak.lua) take turns: GET /v1/models (cached: every one a hit after
# the first), POST /v1/moderations (passed through to the canned nginx upstream) and POST
# /v1/images/generations (moderated, the verdict cached), with auth and the quotas of
# bench/tollgate.scale.yaml, as in bench/scale.sh. wrk runs in segments of SOAK_STEP
# responses (the Lua script stops each once it has them), so each boundary sample is taken at
# an exact count, with Tollgate idle: after the first segment (100,000) and after each next.
#
# Usage: bash bench/rss_soak.sh       (from any directory; 4-8 minutes on a shared 2-core VM)
# Env:   SOAK_REQUESTS=1000000  SOAK_STEP=100000 (the first sample, and every later one)
#        SOAK_CONNECTIONS=32  SOAK_INTERVAL=5 (seconds between periodic samples)
#        SOAK_SEGMENT_LIMIT=300s (a segment still short of its count by then is flagged)
#        SOAK_STORE=memory (or redis: a redis-server started here, on wrk's core)
#        e.g. SOAK_REQUESTS=50000 SOAK_STEP=10000 bash bench/rss_soak.sh   (a quick trial)
# Pinning, safety and helpers as in bench/scale.sh (bench/lib.sh): Tollgate and nginx on
# core 0, wrk on core 1; loopback only; every wrk run bounded; everything stopped on exit.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BENCH_DURATION=${SOAK_SEGMENT_LIMIT:-300s} bench_init
TOTAL=${SOAK_REQUESTS:-1000000}
STEP=${SOAK_STEP:-100000}
CONNECTIONS=${SOAK_CONNECTIONS:-32}
INTERVAL=${SOAK_INTERVAL:-5}
STORE=${SOAK_STORE:-memory}
CONFIG=bench/tollgate.scale.yaml
OUT=bench/results/rss-$DATE.md
for value in "$TOTAL" "$STEP" "$CONNECTIONS" "$INTERVAL"; do
  [[ $value =~ ^[0-9]+$ ]] && (( value >= 1 )) || die "counts must be whole numbers >= 1"
done
(( TOTAL % STEP == 0 && TOTAL / STEP >= 2 )) \
  || die "SOAK_REQUESTS must be a multiple of SOAK_STEP, at least twice it"
(( STEP >= CONNECTIONS && CONNECTIONS >= THREADS )) || die "need SOAK_STEP >= connections >= threads"
[[ $STORE == memory || $STORE == redis ]] || die "SOAK_STORE is memory or redis, got '$STORE'"

rss_kb() {  # rss_kb PID: resident set size in kB (VmRSS), empty if the process is gone
  awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true
}

sample_every() {  # sample_every PID FILE: "seconds rss_kb" lines until PID ends (bounded)
  local pid=$1 file=$2 start=$SECONDS rss
  for _ in $(seq 10000); do
    rss=$(rss_kb "$pid")
    [[ -n $rss ]] || return 0
    echo "$(( SECONDS - start )) $rss" >>"$file"
    sleep "$INTERVAL"
  done
}

# run_segment N: wrk until every thread has had its share of STEP responses (soak.lua writes
# a line per thread to a file), then SIGINT, on which wrk prints its summary; bounded by
# SOAK_SEGMENT_LIMIT (wrk's -d) and `timeout`, which forwards the signal to wrk.
run_segment() {
  local number=$1 done_file=$TMP/segment-$1.done pid
  : >"$done_file"
  timeout "$WRK_LIMIT" ${PIN_WRK[@]+"${PIN_WRK[@]}"} "$WRK" -t"$THREADS" -c"$CONNECTIONS" \
    -d"$DURATION" -s bench/wrk/soak.lua "$TOLLGATE_URL" -- "$STEP" "$THREADS" "$done_file" \
    >"$TMP/raw/segment-$number.txt" &
  pid=$!
  PIDS+=("$pid")
  while kill -0 "$pid" 2>/dev/null && (( $(wc -l <"$done_file") < THREADS )); do
    sleep 0.2
  done
  kill -INT "$pid" 2>/dev/null || true
  wait "$pid" || echo "!!!! wrk ended with status $? in segment $number" >&2
  stop_server "$pid"  # forget it (it has ended)
}

# --- upstream, store, Tollgate ---------------------------------------------------------------
start_canned_upstream
ENV=(TOLLGATE_STORE="$STORE")
if [[ $STORE == redis ]]; then
  start_redis side
  ENV+=(TOLLGATE_REDIS__URL="$REDIS_URL" TOLLGATE_REDIS__TIMEOUT="${BENCH_REDIS_TIMEOUT:-0.5}")
fi
write_meta "$TMP/meta.txt" "at most, per segment (SOAK_SEGMENT_LIMIT)"
{
  echo "requests=$TOTAL in segments of $STEP (bench/wrk/soak.lua: GET /v1/models cached, POST /v1/moderations passed through, POST /v1/images/generations moderated with the verdict cached, in turn), $CONNECTIONS connections"
  echo "tollgate config=$CONFIG (auth, quotas far above the run, moderation on), default cache settings, store $STORE, TOLLGATE_LOG__FORMAT=json (stdout to /dev/null)"
  echo "rss=VmRSS from /proc/PID/status: after each segment (Tollgate idle, 1 s after wrk ends) and every $INTERVAL s meanwhile"
} >>"$TMP/meta.txt"
start_tollgate tollgate "$CONFIG" "${ENV[@]}"
for req in models moderations images; do
  check_request tollgate "$TOLLGATE_URL" "$req" "x-ratelimit-limit-requests: 100000000"
done
echo "0 $(rss_kb "$TOLLGATE_PID")" >"$TMP/raw/boundaries"

# --- the soak ----------------------------------------------------------------------------------
sample_every "$TOLLGATE_PID" "$TMP/raw/periodic" &
PIDS+=("$!")
SAMPLER_PID=$!
done_so_far=0
segment=0
while (( done_so_far < TOTAL )); do
  segment=$(( segment + 1 ))
  echo "  segment $segment: $STEP requests (done: $done_so_far of $TOTAL)" >&2
  run_segment "$segment"
  done_so_far=$(( done_so_far + STEP ))
  sleep 1
  rss=$(rss_kb "$TOLLGATE_PID")
  [[ -n $rss ]] || { cat "$TMP/tollgate.log" >&2; die "Tollgate exited during the soak"; }
  echo "$done_so_far $rss" >>"$TMP/raw/boundaries"
  echo "  RSS after $done_so_far: $rss kB" >&2
done
grep -E '^Vm(HWM|RSS):' "/proc/$TOLLGATE_PID/status" | tr -s ' \t' ' ' >"$TMP/raw/final-status" || true
stop_server "$SAMPLER_PID"
stop_tollgate tollgate
stop_server "$NGINX_PID"
load_after "$TMP/meta.txt"

# --- report ------------------------------------------------------------------------------------
report_status=0
"$PY" bench/rss_report.py "$TMP/raw" --meta "$TMP/meta.txt" --first "$STEP" --out "$OUT" \
  || report_status=$?
echo >&2
echo "written: $OUT" >&2
if (( report_status != 0 )); then
  echo "!!!! the soak missed the target or had problems: see the report" >&2
fi
exit "$report_status"
