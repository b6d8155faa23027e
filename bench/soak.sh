#!/usr/bin/env bash
# Soak (issue 10): SOAK_SECONDS (default 600) of mixed traffic through Tollgate with faults
# injected on a schedule; writes bench/results/soak-<date>.md and exits 1 if any answer was
# unexpected. bench/soak.py does the work: it starts redis-server (AOF, fsync always),
# `tollgate fake-upstream --control` and `tollgate serve` on free loopback ports, kills and
# restarts them on schedule, sends and judges the traffic, samples Tollgate's RSS and fds.
#
#   bash bench/soak.sh                      # 10 minutes
#   SOAK_SECONDS=60 bash bench/soak.sh      # a trial
#   SOAK_CONCURRENCY=16 bash bench/soak.sh  # requests in flight at once (default 8)
#   SOAK_KEEP_LOGS=/tmp/soak-logs ...       # keep the servers' logs (otherwise removed)
#
# Every process is stopped on exit, also on INT/TERM; the driver is bounded by `timeout`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
PY=$ROOT/.venv/bin/python
TOLLGATE=$ROOT/.venv/bin/tollgate
REDIS_SERVER=${REDIS_SERVER:-redis-server}
SOAK_SECONDS=${SOAK_SECONDS:-600}
SOAK_CONCURRENCY=${SOAK_CONCURRENCY:-8}
DATE=$(date +%F)
REPORT=${SOAK_REPORT:-bench/results/soak-$DATE.md}

[[ -x $PY && -x $TOLLGATE ]] || die "no venv at $ROOT/.venv (pip install -e '.[dev]' first)"
command -v "$REDIS_SERVER" >/dev/null || die "redis-server not found (apt-get install -y redis-server)"
[[ $SOAK_SECONDS =~ ^[0-9]+$ ]] && (( SOAK_SECONDS >= 30 && SOAK_SECONDS <= 7200 )) \
  || die "SOAK_SECONDS must be 30..7200, got '$SOAK_SECONDS'"
[[ $SOAK_CONCURRENCY =~ ^[0-9]+$ ]] && (( SOAK_CONCURRENCY >= 1 && SOAK_CONCURRENCY <= 64 )) \
  || die "SOAK_CONCURRENCY must be 1..64, got '$SOAK_CONCURRENCY'"

# Like lib.sh's cleanup, plus the servers the driver listed in $TMP/pids (it stops them
# itself; this is for a driver that died before it could) and the logs kept if asked.
TMP=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-soak.XXXXXX")
soak_cleanup() {
  local status=$? pid
  if [[ -n ${SOAK_KEEP_LOGS:-} ]]; then
    mkdir -p "$SOAK_KEEP_LOGS" && cp "$TMP"/*.log "$SOAK_KEEP_LOGS"/ 2>/dev/null || true
  fi
  if [[ -f $TMP/pids ]]; then
    while read -r pid; do
      if [[ -d /proc/$pid ]]; then stop_pid "$pid"; fi
    done <"$TMP/pids"
  fi
  rm -rf "$TMP"
  exit "$status"
}
trap soak_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p bench/results

PY_LIMIT=$(( SOAK_SECONDS + 180 ))  # start-up, the idle end and the report fit in 3 minutes
echo "soak: ${SOAK_SECONDS} s, concurrency $SOAK_CONCURRENCY, logs in $TMP (removed at exit)" >&2
status=0
timeout --kill-after=10 "$PY_LIMIT" "$PY" bench/soak.py \
  --seconds "$SOAK_SECONDS" --concurrency "$SOAK_CONCURRENCY" --tmp "$TMP" --report "$REPORT" \
  --ports "$(free_port)" "$(free_port)" "$(free_port)" \
  --tollgate "$TOLLGATE" --redis-server "$REDIS_SERVER" || status=$?
if (( status != 0 )); then
  echo "!!!! soak: the driver exited $status; the last lines of each server's log:" >&2
  for log in "$TMP"/*.log; do
    [[ -f $log ]] && { echo "== $log" >&2; tail -n 5 "$log" >&2; }
  done
fi
echo "report: $REPORT" >&2
exit "$status"
