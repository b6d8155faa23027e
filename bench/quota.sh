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
# core. Everything listens on 127.0.0.1; every process started here stops on exit.
#
# Store timeout: wrk keeps Tollgate saturated, where the event loop alone can take longer
# than the 50 ms default to get to a Redis reply; the runs use TOLLGATE_REDIS__TIMEOUT=0.5
# (BENCH_REDIS_TIMEOUT) so that saturation is measured, not turned into fail_closed 503s.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

DURATION=${BENCH_DURATION:-10s}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
THREADS=${BENCH_THREADS:-1}
WARMUP=2s
PY=$ROOT/.venv/bin/python
TOLLGATE=$ROOT/.venv/bin/tollgate
NGINX=${NGINX:-/usr/sbin/nginx}
WRK=${WRK:-wrk}
REDIS=${REDIS:-redis-server}
REDIS_TIMEOUT=${BENCH_REDIS_TIMEOUT:-0.5}
CLIENT_KEY=tg-bench-key
PATHS=(unlimited memory redis redis-rates)
REQUESTS=(models images)
DATE=$(date +%F)
OUT=bench/results/quota-$DATE.md

die() { echo "bench/quota.sh: $*" >&2; exit 1; }

[[ -x $PY && -x $TOLLGATE ]] || die "no venv at $ROOT/.venv (pip install -e '.[dev]' first)"
for tool in "$NGINX" "$WRK" "$REDIS" curl; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
[[ $CONNECTIONS =~ ^[0-9]+$ && $THREADS =~ ^[0-9]+$ ]] || die "bad connections/threads"
case $DURATION in
  *m) seconds=$(( ${DURATION%m} * 60 )) ;;
  *s) seconds=${DURATION%s} ;;
  *) seconds=$DURATION ;;
esac
[[ $seconds =~ ^[0-9]+$ ]] && (( seconds >= 1 && seconds <= 600 )) \
  || die "BENCH_DURATION must be 1s..10m, got '$DURATION'"
WRK_LIMIT=$(( seconds + 30 ))

PIN_SERVER=()
PIN_SIDE=()
PINNING="none (taskset missing or fewer than 2 cores)"
if command -v taskset >/dev/null && (( $(nproc) >= 2 )); then
  PIN_SERVER=(taskset -c 0)
  PIN_SIDE=(taskset -c 1)
  PINNING="nginx and Tollgate on core 0; wrk and redis-server on core 1"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-quota-bench.XXXXXX")
PIDS=()

stop_pid() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

stop_server() {
  local pid=$1 kept=() p
  stop_pid "$pid"
  for p in ${PIDS[@]+"${PIDS[@]}"}; do [[ $p == "$pid" ]] || kept+=("$p"); done
  PIDS=(${kept[@]+"${kept[@]}"})
}

cleanup() {
  local status=$? p
  for p in ${PIDS[@]+"${PIDS[@]}"}; do stop_pid "$p"; done
  rm -rf "$TMP"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() {  # wait_http URL PID NAME LOG
  local url=$1 pid=$2 name=$3 log=$4
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2 || true; die "$name exited during start-up"; }
    curl -s -o /dev/null --max-time 1 "$url" && return 0
    sleep 0.1
  done
  cat "$log" >&2 || true
  die "$name did not answer on $url within 10 s"
}

request_path() { [[ $1 == models ]] && echo /v1/models || echo /v1/images/generations; }
curl_args() {
  if [[ $1 == models ]]; then
    printf '%s\n' -H "Authorization: Bearer $CLIENT_KEY"
  else
    printf '%s\n' -X POST -H "Authorization: Bearer $CLIENT_KEY" -H "Content-Type: application/json" \
      --data-binary '{"prompt": "A cute baby sea otter", "n": 1, "size": "1024x1024"}'
  fi
}

cpu_ticks() {  # cpu_ticks PID: user + system CPU time of the process, in clock ticks
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}

bench_path() {  # bench_path NAME BASE PID
  local name=$1 base=$2 pid=$3 req status before args=()
  for req in "${REQUESTS[@]}"; do
    mapfile -t args < <(curl_args "$req")
    status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "${args[@]}" \
      "$base$(request_path "$req")" || true)
    echo "${status:-none}" >"$TMP/raw/$name-$req.check"
    if [[ $status != 200 ]]; then
      echo "!!!! $name $req answered '$status', not 200" >&2
      curl -sv --max-time 10 "${args[@]}" "$base$(request_path "$req")" \
        >"$TMP/raw/$name-$req.curl" 2>&1 || true
    fi
  done
  for req in "${REQUESTS[@]}"; do
    echo "  $name $req: warm-up $WARMUP, then $DURATION" >&2
    timeout 60 "${PIN_SIDE[@]}" "$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" \
      -s "bench/wrk/$req.lua" "$base$(request_path "$req")" >/dev/null
    before=$(cpu_ticks "$pid")
    timeout "$WRK_LIMIT" "${PIN_SIDE[@]}" "$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" \
      --latency -s "bench/wrk/$req.lua" "$base$(request_path "$req")" >"$TMP/raw/$name-$req.txt"
    echo "$(( $(cpu_ticks "$pid") - before )) $(getconf CLK_TCK)" >"$TMP/raw/$name-$req.cpu"
  done
}

mkdir -p "$TMP/raw" "$TMP/nginx" bench/results

# --- upstream: nginx with canned answers, as in bench/run.sh -------------------------------
NGINX_PORT=$(free_port)
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 100000;
  client_body_temp_path $TMP/nginx/client_body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    default_type application/json;
    add_header x-request-id req_bench0123456789 always;
    location = /v1/models {
      return 200 '{"object":"list","data":[{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"},{"id":"dall-e-2","object":"model","created":1698798177,"owned_by":"system"}]}';
    }
    location = /v1/images/generations {
      return 200 '{"created":1713833628,"data":[{"url":"https://oaidalleapiprodscus.blob.core.windows.net/private/org-bench/user-bench/img-bench0123456789.png"}]}';
    }
    location / { return 404 '{"error":{"message":"Unknown request URL.","type":"invalid_request_error","param":null,"code":"unknown_url"}}'; }
  }
}
EOF
"${PIN_SERVER[@]}" "$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" &
PIDS+=("$!")
UPSTREAM=http://127.0.0.1:$NGINX_PORT
wait_http "$UPSTREAM/v1/models" "${PIDS[-1]}" nginx "$TMP/nginx/error.log"

# --- Redis, for the redis paths ------------------------------------------------------------
REDIS_PORT=$(free_port)
"${PIN_SIDE[@]}" "$REDIS" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$TMP" >"$TMP/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")

run_tollgate() {  # run_tollgate NAME STORE POLICY
  local name=$1 store=$2 policy=$3 port pid
  port=$(free_port)
  TOLLGATE_UPSTREAM__BASE_URL=$UPSTREAM TOLLGATE_UPSTREAM__API_KEY=sk-bench \
    TOLLGATE_LOG__FORMAT=json TOLLGATE_STORE=$store TOLLGATE_DATA_FILE=$TMP/keys-$name.json \
    TOLLGATE_REDIS__URL=redis://127.0.0.1:$REDIS_PORT/0 TOLLGATE_REDIS__TIMEOUT=$REDIS_TIMEOUT \
    "${PIN_SERVER[@]}" "$TOLLGATE" serve --host 127.0.0.1 --port "$port" --config "$policy" \
    >/dev/null 2>"$TMP/tollgate-$name.log" &  # taskset execs Tollgate: $! is Tollgate's pid
  pid=$!
  PIDS+=("$pid")
  wait_http "http://127.0.0.1:$port/healthz" "$pid" "tollgate ($name)" "$TMP/tollgate-$name.log"
  echo "$name: Tollgate on 127.0.0.1:$port, store $store, $policy" >&2
  bench_path "$name" "http://127.0.0.1:$port" "$pid"
  stop_server "$pid"
  echo "$name=store $store, config $policy" >>"$TMP/paths.txt"
}

read -r LOAD_BEFORE _ < /proc/loadavg
run_tollgate unlimited memory bench/tollgate.bench.yaml
run_tollgate memory memory bench/tollgate.quota.yaml
run_tollgate redis redis bench/tollgate.quota.yaml
run_tollgate redis-rates redis bench/tollgate.quota-rates.yaml
read -r LOAD_AFTER _ < /proc/loadavg

{
  echo "date=$DATE"
  echo "nproc=$(nproc)"
  echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  echo "python=$("$PY" -c 'import platform; print(platform.python_version())')"
  echo "redis=$("$REDIS" --version | sed 's/^Redis server v=\([^ ]*\).*/\1/')"
  echo "wrk=$( ("$WRK" -v 2>&1 || true) | sed -n '1s/^wrk \([^ ]*\).*/\1/p')"
  echo "tollgate=commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), working tree as run"
  echo "duration=$DURATION per request and path, after a $WARMUP warm-up"
  echo "connections=$CONNECTIONS"
  echo "threads=$THREADS"
  echo "pinning=$PINNING"
  echo "upstream=nginx on 127.0.0.1 returning canned OpenAI-shaped JSON"
  echo "log=TOLLGATE_LOG__FORMAT=json to /dev/null"
  echo "redis timeout=$REDIS_TIMEOUT s (TOLLGATE_REDIS__TIMEOUT; failure mode fail_closed)"
  cat "$TMP/paths.txt"
  echo "load before=$LOAD_BEFORE, after=$LOAD_AFTER (1-minute load average)"
} >"$TMP/meta.txt"

report_status=0
"$PY" bench/quota_report.py "$TMP/raw" --meta "$TMP/meta.txt" --out "$OUT" || report_status=$?
echo "written: $OUT" >&2
exit "$report_status"
