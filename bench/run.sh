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
# by `timeout`), and every process started here is stopped on exit (trap EXIT).
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
CLIENT_KEY=tg-bench-key
REQUESTS=(models moderations images)
DATE=$(date +%F)
OUT=bench/results/passthrough-$DATE.md

die() { echo "bench/run.sh: $*" >&2; exit 1; }

# --- checks -------------------------------------------------------------------------------
[[ -x $PY && -x $TOLLGATE ]] || die "no venv at $ROOT/.venv (pip install -e '.[dev]' first)"
command -v "$NGINX" >/dev/null || die "nginx not found (apt-get install -y nginx-light)"
command -v "$WRK" >/dev/null || die "wrk not found (apt-get install -y wrk)"
command -v curl >/dev/null || die "curl not found"
[[ $CONNECTIONS =~ ^[0-9]+$ && $THREADS =~ ^[0-9]+$ ]] || die "bad connections/threads"
(( THREADS >= 1 && CONNECTIONS >= THREADS )) || die "need CONNECTIONS >= THREADS >= 1"
case $DURATION in
  *m) seconds=$(( ${DURATION%m} * 60 )) ;;
  *s) seconds=${DURATION%s} ;;
  *) seconds=$DURATION ;;
esac
[[ $seconds =~ ^[0-9]+$ ]] && (( seconds >= 1 && seconds <= 600 )) \
  || die "BENCH_DURATION must be 1s..10m (N, Ns or Nm), got '$DURATION'"
WRK_LIMIT=$(( seconds + 30 ))  # hard stop for one wrk run

PIN_SERVER=()
PIN_WRK=()
PINNING="none (taskset missing or fewer than 2 cores)"
if command -v taskset >/dev/null && (( $(nproc) >= 2 )); then
  PIN_SERVER=(taskset -c 0)
  PIN_WRK=(taskset -c 1)
  PINNING="servers on core 0 (taskset -c 0), wrk on core 1 (taskset -c 1)"
fi

# --- process bookkeeping ------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-bench.XXXXXX")
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

stop_server() {  # stop one server started here and forget it
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

wait_http() {  # wait_http URL PID NAME LOG: until URL answers any HTTP status, at most 10 s
  local url=$1 pid=$2 name=$3 log=$4
  for _ in $(seq 100); do
    if ! kill -0 "$pid" 2>/dev/null; then
      cat "$log" >&2 || true
      die "$name exited during start-up"
    fi
    curl -s -o /dev/null --max-time 1 "$url" && return 0
    sleep 0.1
  done
  cat "$log" >&2 || true
  die "$name did not answer on $url within 10 s"
}

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
  local name=$1 base=$2 req=$3 status args=()
  mapfile -t args < <(curl_args "$req")
  status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "${args[@]}" \
    "$base$(request_path "$req")" || true)
  echo "${status:-none}" >"$TMP/raw/$name-$req.check"
  if [[ $status != 200 ]]; then
    {
      echo "!!!! $name $(request_method "$req") $(request_path "$req") answered '$status', not 200"
      curl -sv --max-time 10 "${args[@]}" "$base$(request_path "$req")" 2>&1 || true
      echo
    } | tee "$TMP/raw/$name-$req.curl" >&2
  fi
}

bench_path() {  # bench_path PATHNAME BASE: warm-up then measure every request
  local name=$1 base=$2 req url script
  for req in "${REQUESTS[@]}"; do
    check_request "$name" "$base" "$req"
  done
  for req in "${REQUESTS[@]}"; do
    url=$base$(request_path "$req")
    script=bench/wrk/$req.lua
    echo "  $name $req: warm-up $WARMUP, then $DURATION" >&2
    timeout 60 "${PIN_WRK[@]}" "$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s "$script" \
      "$url" >/dev/null
    timeout "$WRK_LIMIT" "${PIN_WRK[@]}" "$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" \
      --latency -s "$script" "$url" >"$TMP/raw/$name-$req.txt"
  done
}

mkdir -p "$TMP/raw" "$TMP/nginx" bench/results

# --- upstream: nginx with canned OpenAI-shaped answers ------------------------------------
NGINX_PORT=$(free_port)
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  server_tokens off;
  keepalive_requests 100000;
  keepalive_timeout 75s;
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
      return 200 '{"object":"list","data":[{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"},{"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"system"},{"id":"omni-moderation-latest","object":"model","created":1731689265,"owned_by":"system"},{"id":"dall-e-2","object":"model","created":1698798177,"owned_by":"system"},{"id":"text-embedding-3-small","object":"model","created":1705948997,"owned_by":"system"}]}';
    }
    location = /v1/moderations {
      return 200 '{"id":"modr-bench0123456789","model":"omni-moderation-latest","results":[{"flagged":true,"categories":{"harassment":true,"harassment/threatening":true,"hate":false,"hate/threatening":false,"illicit":false,"illicit/violent":false,"self-harm":false,"self-harm/intent":false,"self-harm/instructions":false,"sexual":false,"sexual/minors":false,"violence":true,"violence/graphic":false},"category_scores":{"harassment":0.5215,"harassment/threatening":0.5694,"hate":0.0027,"hate/threatening":0.0006,"illicit":0.0012,"illicit/violent":0.0009,"self-harm":0.0004,"self-harm/intent":0.0002,"self-harm/instructions":0.0002,"sexual":0.0001,"sexual/minors":0.0000,"violence":0.9971,"violence/graphic":0.0031}}]}';
    }
    location = /v1/images/generations {
      return 200 '{"created":1713833628,"data":[{"url":"https://oaidalleapiprodscus.blob.core.windows.net/private/org-bench/user-bench/img-bench0123456789.png"}]}';
    }
    location / {
      return 404 '{"error":{"message":"Unknown request URL.","type":"invalid_request_error","param":null,"code":"unknown_url"}}';
    }
  }
}
EOF
"$NGINX" -t -q -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" \
  || die "nginx config test failed"
"${PIN_SERVER[@]}" "$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/error.log" \
  -c "$TMP/nginx/nginx.conf" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
UPSTREAM=http://127.0.0.1:$NGINX_PORT
wait_http "$UPSTREAM/v1/models" "$NGINX_PID" nginx "$TMP/nginx/error.log"

# --- machine and parameters ---------------------------------------------------------------
TOLLGATE_VERSION=$("$PY" -c 'import proxy; print(proxy.__version__)')
read -r LOAD_BEFORE _ < /proc/loadavg
if awk -v l="$LOAD_BEFORE" 'BEGIN { exit !(l > 0.5) }'; then
  echo "!!!! load average is $LOAD_BEFORE before the run: other work on this machine skews it" >&2
fi
{
  echo "date=$DATE"
  echo "nproc=$(nproc)"
  echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  echo "kernel=$(uname -r)"
  echo "python=$("$PY" -c 'import platform; print(platform.python_version())')"
  echo "aiohttp=$("$PY" -c 'import aiohttp; print(aiohttp.__version__)')"
  echo "uvloop=$("$PY" -c 'import uvloop; print(uvloop.__version__)')"
  echo "nginx=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
  echo "wrk=$( ("$WRK" -v 2>&1 || true) | sed -n '1s/^wrk \([^ ]*\).*/\1/p')"
  echo "tollgate=$TOLLGATE_VERSION (commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), working tree as run)"
  echo "duration=$DURATION per request and path, after a $WARMUP warm-up"
  echo "connections=$CONNECTIONS"
  echo "threads=$THREADS"
  echo "workers=1 process per server (nginx: worker_processes 1; floor and Tollgate: one event loop, uvloop)"
  echo "pinning=$PINNING"
  echo "upstream=nginx on 127.0.0.1 returning canned OpenAI-shaped JSON (keepalive_requests 100000, access_log off)"
  echo "tollgate env=TOLLGATE_LOG__FORMAT=json (stdout to /dev/null), store memory, config bench/tollgate.bench.yaml"
} >"$TMP/meta.txt"
echo "load before=$LOAD_BEFORE (1-minute load average, /proc/loadavg)" >"$TMP/meta-load.txt"

echo "direct: nginx on $UPSTREAM" >&2
bench_path direct "$UPSTREAM"

# --- floor --------------------------------------------------------------------------------
FLOOR_PORT=$(free_port)
"${PIN_SERVER[@]}" "$PY" bench/floor.py --port "$FLOOR_PORT" --upstream "$UPSTREAM" \
  >"$TMP/floor.log" 2>&1 &
FLOOR_PID=$!
PIDS+=("$FLOOR_PID")
wait_http "http://127.0.0.1:$FLOOR_PORT/v1/models" "$FLOOR_PID" floor "$TMP/floor.log"
echo "floor: bench/floor.py on 127.0.0.1:$FLOOR_PORT" >&2
bench_path floor "http://127.0.0.1:$FLOOR_PORT"
stop_server "$FLOOR_PID"

# --- Tollgate -----------------------------------------------------------------------------
TOLLGATE_PORT=$(free_port)
TOLLGATE_UPSTREAM__BASE_URL=$UPSTREAM TOLLGATE_UPSTREAM__API_KEY=sk-bench \
  TOLLGATE_LOG__FORMAT=json \
  "${PIN_SERVER[@]}" "$TOLLGATE" serve --host 127.0.0.1 --port "$TOLLGATE_PORT" \
  --config bench/tollgate.bench.yaml >/dev/null 2>"$TMP/tollgate.log" &
TOLLGATE_PID=$!
PIDS+=("$TOLLGATE_PID")
wait_http "http://127.0.0.1:$TOLLGATE_PORT/healthz" "$TOLLGATE_PID" tollgate "$TMP/tollgate.log"
echo "tollgate: on 127.0.0.1:$TOLLGATE_PORT" >&2
bench_path tollgate "http://127.0.0.1:$TOLLGATE_PORT"
stop_server "$TOLLGATE_PID"
if [[ -s $TMP/tollgate.log ]]; then
  echo "tollgate stderr:" >&2
  tail -n 20 "$TMP/tollgate.log" >&2
fi

stop_server "$NGINX_PID"
read -r LOAD_AFTER _ < /proc/loadavg
echo "load after=$LOAD_AFTER (includes the benchmark's own load; about 2 is expected)" \
  >>"$TMP/meta-load.txt"
cat "$TMP/meta-load.txt" >>"$TMP/meta.txt"

# --- report -------------------------------------------------------------------------------
report_status=0
"$PY" bench/report.py "$TMP/raw" --meta "$TMP/meta.txt" --out "$OUT" || report_status=$?
echo >&2
echo "written: $OUT" >&2
if (( report_status != 0 )); then
  echo "!!!! some runs had errors (non-2xx, socket errors or a failed curl check): see the report" >&2
fi
exit "$report_status"
