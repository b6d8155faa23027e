#!/usr/bin/env bash
# Passthrough benchmark: requests/second and p50/p99 latency, measured with wrk, of three
# OpenAI requests sent (a) straight to an nginx upstream serving canned JSON, (b) through the
# bare aiohttp forwarder bench/floor.py, (c) through Tollgate. One process serves each path.
#
# Usage: bash bench/run.sh            (from any directory)
# Env:   BENCH_DURATION=10s  BENCH_CONNECTIONS=32  BENCH_THREADS=1
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
bench_init
REQUESTS=(models moderations images)
OUT=bench/results/passthrough-$DATE.md

# --- requests -----------------------------------------------------------------------------
request_method() { [[ $1 == models ]] && echo GET || echo POST; }
request_path() {
  case $1 in
    models) echo /v1/models ;;
    moderations) echo /v1/moderations ;;
    images) echo /v1/images/generations ;;
  esac
}
request_body() {
  case $1 in
    models) echo "" ;;
    moderations) echo '{"input": "I want to kill them.", "model": "omni-moderation-latest"}' ;;
    images) echo '{"prompt": "A cute baby sea otter", "n": 1, "size": "1024x1024"}' ;;
  esac
}

curl_args() {  # the curl arguments for request $1 (the same as its wrk script sends)
  local req=$1 body
  body=$(request_body "$req")
  printf '%s\n' -X "$(request_method "$req")" -H "Authorization: Bearer $CLIENT_KEY"
  if [[ -n $body ]]; then
    printf '%s\n' -H "Content-Type: application/json" --data-binary "$body"
  fi
}

check_request() {  # check_request PATHNAME BASE REQ: one curl, status saved; loud if not 200
  local name=$1 base=$2 req=$3 args=()
  mapfile -t args < <(curl_args "$req")
  check_http "$name-$req" "$name $(request_method "$req") $(request_path "$req")" \
    "$base$(request_path "$req")" "" "${args[@]}"
}

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

# --- upstream: nginx with canned OpenAI-shaped answers ------------------------------------
start_canned_upstream

# --- machine and parameters ---------------------------------------------------------------
write_meta "$TMP/meta.txt" "per request and path"
echo "tollgate env=TOLLGATE_LOG__FORMAT=json (stdout to /dev/null), TOLLGATE_CACHE__ENABLED=false (pass-through), store memory, config bench/tollgate.bench.yaml (moderation off)" \
  >>"$TMP/meta.txt"

echo "direct: nginx on $UPSTREAM" >&2
bench_path direct "$UPSTREAM"

# --- floor --------------------------------------------------------------------------------
FLOOR_PORT=$(free_port)
spawn "$TMP/floor.log" "$TMP/floor.log" \
  "$PY" bench/floor.py --port "$FLOOR_PORT" --upstream "$UPSTREAM"
FLOOR_PID=$SPAWNED
wait_http "http://127.0.0.1:$FLOOR_PORT/v1/models" "$FLOOR_PID" floor "$TMP/floor.log"
echo "floor: bench/floor.py on 127.0.0.1:$FLOOR_PORT" >&2
bench_path floor "http://127.0.0.1:$FLOOR_PORT"
stop_server "$FLOOR_PID"

# --- Tollgate -----------------------------------------------------------------------------
TOLLGATE_PORT=$(free_port)
spawn /dev/null "$TMP/tollgate.log" \
  env TOLLGATE_UPSTREAM__BASE_URL="$UPSTREAM" TOLLGATE_UPSTREAM__API_KEY=sk-bench \
  TOLLGATE_LOG__FORMAT=json TOLLGATE_CACHE__ENABLED=false \
  "$TOLLGATE" serve --host 127.0.0.1 --port "$TOLLGATE_PORT" --config bench/tollgate.bench.yaml
TOLLGATE_PID=$SPAWNED
wait_http "http://127.0.0.1:$TOLLGATE_PORT/healthz" "$TOLLGATE_PID" tollgate "$TMP/tollgate.log"
echo "tollgate: on 127.0.0.1:$TOLLGATE_PORT" >&2
bench_path tollgate "http://127.0.0.1:$TOLLGATE_PORT"
stop_server "$TOLLGATE_PID"
if [[ -s $TMP/tollgate.log ]]; then
  echo "tollgate stderr:" >&2
  tail -n 20 "$TMP/tollgate.log" >&2
fi

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
