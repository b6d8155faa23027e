#!/usr/bin/env bash
# Passthrough benchmark: requests/second and p50/p99 latency, measured with wrk, of three
# OpenAI requests sent (a) straight to an nginx upstream serving canned JSON, (b) through the
# bare aiohttp forwarder bench/floor.py, (c) through Tollgate. One process serves each path.
#
# Usage: bash bench/run.sh            (from any directory)
# Env:   BENCH_DURATION=5s  BENCH_ROUNDS=6  BENCH_CONNECTIONS=32  BENCH_THREADS=1
#
# The floor and Tollgate run side by side and take turns, round by round (the order
# alternating, so an even count puts each first equally often), BENCH_DURATION each: on a
# shared machine whose load drifts, a ratio of two runs seconds apart is steadier than one of
# two runs a minute apart. The report gives the median of the rounds' tollgate/floor ratios,
# and every round.
#
# CPU pinning: on a machine with 2+ cores and taskset, the servers (nginx, floor, Tollgate)
# run on core 0 and wrk on core 1, so the load generator never steals the proxy's core. The
# proxy and nginx share core 0 on paths (b) and (c); nginx's share is small and the same for
# both, so the tollgate/floor ratio stays fair. Without taskset nothing is pinned.
#
# Safety: everything listens on 127.0.0.1 only, each wrk run is bounded by its duration (and
# by `timeout`), and every process started here is stopped on exit (trap EXIT). The helpers
# for all of this (and the canned nginx upstream) are in bench/lib.sh, shared with cache.sh.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BENCH_DURATION=${BENCH_DURATION:-5s}
bench_init
ROUNDS=${BENCH_ROUNDS:-6}
[[ $ROUNDS =~ ^[0-9]+$ ]] && (( ROUNDS >= 1 && ROUNDS <= 20 )) || die "BENCH_ROUNDS must be 1..20"
REQUESTS=(models moderations images)
OUT=bench/results/passthrough-$DATE.md

bench_path() {  # bench_path PATHNAME BASE: warm-up then measure every request
  local name=$1 base=$2 req
  for req in "${REQUESTS[@]}"; do
    check_request "$name" "$base" "$req"
  done
  for req in "${REQUESTS[@]}"; do
    wrk_run "$name $req" "$TMP/raw/$name-$req.txt" "$base$(request_path "$req")" \
      "bench/wrk/$req.lua"
  done
}

turn_url() {  # turn_url TURN REQ: the URL of request REQ on TURN (floor or tollgate)
  local base=$FLOOR_URL
  [[ $1 == tollgate ]] && base=$TOLLGATE_URL
  echo "$base$(request_path "$2")"
}

bench_rounds() {  # bench_rounds: floor and Tollgate in turns, ROUNDS rounds per request
  local req round turn first second
  for req in "${REQUESTS[@]}"; do
    check_request floor "$FLOOR_URL" "$req"
    check_request tollgate "$TOLLGATE_URL" "$req"
  done
  for req in "${REQUESTS[@]}"; do
    echo "  $req: warm-up $WARMUP each, then $ROUNDS rounds of $DURATION each" >&2
    for turn in floor tollgate; do
      wrk_once "$CONNECTIONS" "$WARMUP" /dev/null "$(turn_url "$turn" "$req")" \
        "bench/wrk/$req.lua"
    done
    for round in $(seq "$ROUNDS"); do
      first=floor second=tollgate
      (( round % 2 == 0 )) && first=tollgate second=floor
      for turn in "$first" "$second"; do
        wrk_once "$CONNECTIONS" "$DURATION" "$TMP/raw/$turn-$req.r$round.txt" \
          "$(turn_url "$turn" "$req")" "bench/wrk/$req.lua"
      done
    done
  done
}

# --- upstream: nginx with canned OpenAI-shaped answers ------------------------------------
start_canned_upstream

# --- machine and parameters ---------------------------------------------------------------
write_meta "$TMP/meta.txt" "per request and path (floor and Tollgate: per round)"
echo "rounds=$ROUNDS (floor and Tollgate in turns, the order alternating; direct: one run)" \
  >>"$TMP/meta.txt"
echo "tollgate env=TOLLGATE_LOG__FORMAT=json (stdout to /dev/null), TOLLGATE_CACHE__ENABLED=false (pass-through), store memory, config bench/tollgate.bench.yaml (moderation off)" \
  >>"$TMP/meta.txt"

echo "direct: nginx on $UPSTREAM" >&2
bench_path direct "$UPSTREAM"

# --- floor and Tollgate, side by side, in turns --------------------------------------------
start_floor
start_tollgate tollgate bench/tollgate.bench.yaml TOLLGATE_CACHE__ENABLED=false
bench_rounds
stop_server "$FLOOR_PID"
stop_tollgate tollgate

stop_server "$NGINX_PID"
load_after "$TMP/meta.txt"

# --- report -------------------------------------------------------------------------------
report_status=0
"$PY" bench/report.py "$TMP/raw" --meta "$TMP/meta.txt" --out "$OUT" || report_status=$?
echo >&2
echo "written: $OUT" >&2
if (( report_status != 0 )); then
  echo "!!!! some runs had errors (non-2xx, socket errors or a failed curl check): see the report" >&2
fi
exit "$report_status"
