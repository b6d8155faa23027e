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
  local name=$1 config=$2 script=$3 url
  start_tollgate "$name" "$config" TOLLGATE_CACHE__ENABLED=false
  url=$TOLLGATE_URL/v1/images/generations
  check_http "$name" "$name POST images" "$url" "" "${AUTH[@]}" --data-binary "$BODY"
  wrk_run "$name" "$TMP/raw/$name.txt" "$url" "$script"
  stop_tollgate "$name"
}

run_path off bench/tollgate.bench.yaml bench/wrk/images.lua
run_path cached bench/tollgate.moderated.yaml bench/wrk/images.lua
run_path cold bench/tollgate.moderated.yaml bench/wrk/images-unique.lua
load_after "$TMP/meta.txt"
"$PY" bench/moderation_report.py "$TMP/raw" --meta "$TMP/meta.txt" --out "$OUT"
echo "written: $OUT" >&2
