#!/usr/bin/env bash
# Moderation benchmark: POST /v1/images/generations through Tollgate, in one run, with
# moderation off, with moderation on and every verdict already cached (the same prompt), and
# with moderation on and every verdict cold (a new prompt on every request: one moderation
# call upstream per image request). The upstream is the canned nginx (its moderation verdict
# is clean). Reports rps and p50/p99, and each as a ratio to moderation off.
#
# Usage: bash bench/moderation.sh    (from any directory)
# Env:   BENCH_DURATION=10s  BENCH_CONNECTIONS=32  BENCH_THREADS=1
# Pinning, safety and helpers as in run.sh (bench/lib.sh): loopback only, bounded, cleaned up.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init
OUT=bench/results/moderation-$DATE.md
AUTH=(-H "Authorization: Bearer $CLIENT_KEY" -H "Content-Type: application/json")
BODY='{"prompt": "A cute baby sea otter", "n": 1}'

start_canned_upstream ""
write_meta "$TMP/meta.txt" "per path"
echo "tollgate env=TOLLGATE_LOG__FORMAT=json (stdout to /dev/null), cache of GETs off; off: bench/tollgate.bench.yaml; on: bench/tollgate.moderated.yaml (moderation defaults)" >>"$TMP/meta.txt"

run_path() {  # run_path NAME CONFIG SCRIPT: a Tollgate with CONFIG, measured with SCRIPT
  local name=$1 config=$2 script=$3 port url
  port=$(free_port)
  spawn /dev/null "$TMP/$name.log" \
    env TOLLGATE_UPSTREAM__BASE_URL="$UPSTREAM" TOLLGATE_UPSTREAM__API_KEY=sk-bench \
    TOLLGATE_LOG__FORMAT=json TOLLGATE_CACHE__ENABLED=false \
    "$TOLLGATE" serve --host 127.0.0.1 --port "$port" --config "$config"
  url=http://127.0.0.1:$port/v1/images/generations
  wait_http "http://127.0.0.1:$port/healthz" "$SPAWNED" "$name" "$TMP/$name.log"
  check_http "$name" "$name POST images" "$url" "" "${AUTH[@]}" --data-binary "$BODY"
  wrk_run "$name" "$TMP/raw/$name.txt" "$url" "$script"
  stop_server "$SPAWNED"
}

run_path off bench/tollgate.bench.yaml bench/wrk/images.lua
run_path cached bench/tollgate.moderated.yaml bench/wrk/images.lua
run_path cold bench/tollgate.moderated.yaml bench/wrk/images-unique.lua
load_after "$TMP/meta.txt"
"$PY" bench/moderation_report.py "$TMP/raw" --meta "$TMP/meta.txt" --out "$OUT"
echo "written: $OUT" >&2
