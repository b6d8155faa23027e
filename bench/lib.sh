# Shared by the benchmark scripts (bench/run.sh, cache.sh, moderation.sh, quota.sh, scale.sh,
# rss_soak.sh); source it, then call bench_init. It holds what every benchmark here needs:
# parameter checks, CPU pinning, process bookkeeping with cleanup on exit, free ports,
# readiness waits, the three bench requests and curl checks, wrk runs, the nginx upstream
# serving canned OpenAI-shaped JSON (with stub_status to count what reaches it), an nginx
# proxy in front of it, and starting the floor, Tollgate and redis-server; and the machine
# metadata of the report.
#
# After bench_init (from the repository root, which it cd's to):
#   ROOT PY TOLLGATE NGINX WRK      paths and tools
#   DURATION CONNECTIONS THREADS    wrk parameters (BENCH_DURATION, BENCH_CONNECTIONS,
#   WARMUP WRK_LIMIT                BENCH_THREADS), warm-up and hard stop per wrk run
#   DATE CLIENT_KEY                 today, and the key every request carries
#   PIN_SERVER PIN_WRK PINNING      taskset prefixes (empty when not pinning) and a description
#   TMP                             a temporary folder, removed on exit, with raw/ inside
# Every process started with `spawn` (or `spawn_side`) is stopped on exit (trap EXIT), also
# on INT/TERM.

BENCH_NAME="bench/$(basename "$0")"

die() { echo "$BENCH_NAME: $*" >&2; exit 1; }

bench_init() {
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
  DATE=$(date +%F)

  # --- checks -----------------------------------------------------------------------------
  [[ -x $PY && -x $TOLLGATE ]] || die "no venv at $ROOT/.venv (pip install -e '.[dev]' first)"
  command -v "$NGINX" >/dev/null || die "nginx not found (apt-get install -y nginx-light)"
  command -v "$WRK" >/dev/null || die "wrk not found (apt-get install -y wrk)"
  command -v curl >/dev/null || die "curl not found"
  [[ $CONNECTIONS =~ ^[0-9]+$ && $THREADS =~ ^[0-9]+$ ]] || die "bad connections/threads"
  (( THREADS >= 1 && CONNECTIONS >= THREADS )) || die "need CONNECTIONS >= THREADS >= 1"
  local seconds
  seconds=$(duration_seconds BENCH_DURATION "$DURATION")
  WRK_LIMIT=$(( seconds + 30 ))  # hard stop for one wrk run

  # --- pinning: servers on core 0, wrk on core 1 ------------------------------------------
  PIN_SERVER=()
  PIN_WRK=()
  PINNING="none (taskset missing or fewer than 2 cores)"
  if command -v taskset >/dev/null && (( $(nproc) >= 2 )); then
    PIN_SERVER=(taskset -c 0)
    PIN_WRK=(taskset -c 1)
    PINNING="servers on core 0 (taskset -c 0), wrk on core 1 (taskset -c 1)"
  fi

  # --- process bookkeeping ----------------------------------------------------------------
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-bench.XXXXXX")
  PIDS=()
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  mkdir -p "$TMP/raw" bench/results
}

# duration_seconds NAME VALUE: VALUE (N, Ns or Nm, 1 s to 10 min) in seconds; dies naming NAME.
duration_seconds() {
  local name=$1 value=$2 seconds
  case $value in
    *m) seconds=${value%m}; [[ $seconds =~ ^[0-9]+$ ]] && seconds=$(( seconds * 60 )) ;;
    *s) seconds=${value%s} ;;
    *) seconds=$value ;;
  esac
  [[ $seconds =~ ^[0-9]+$ ]] && (( seconds >= 1 && seconds <= 600 )) \
    || die "$name must be 1s..10m (N, Ns or Nm), got '$value'"
  echo "$seconds"
}

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

# spawn STDOUT STDERR COMMAND...: start a server pinned to the server core, in the background;
# its pid is remembered (stopped on exit) and left in SPAWNED. STDOUT and STDERR are files (the
# same file for both: written as with 2>&1), or both "-" to inherit the script's. Use `env
# VAR=value cmd` for environment variables: taskset and env exec the command, so the pid is the
# server's own. spawn_side does the same on wrk's core (for what stands in for another machine).
spawn() { spawn_pinned PIN_SERVER "$@"; }
spawn_side() { spawn_pinned PIN_WRK "$@"; }

spawn_pinned() {  # spawn_pinned PIN_ARRAY_NAME STDOUT STDERR COMMAND...
  local -n pin=$1
  local out=$2 err=$3
  shift 3
  if [[ $out == - && $err == - ]]; then
    ${pin[@]+"${pin[@]}"} "$@" &
  elif [[ $out == "$err" ]]; then
    ${pin[@]+"${pin[@]}"} "$@" >"$out" 2>&1 &
  else
    ${pin[@]+"${pin[@]}"} "$@" >"$out" 2>"$err" &
  fi
  SPAWNED=$!
  PIDS+=("$SPAWNED")
}

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_ready NAME PID LOG WHAT COMMAND...: until COMMAND succeeds, at most 10 s; dies loudly
# (with the server's log) if the server exits first or never gets ready.
wait_ready() {
  local name=$1 pid=$2 log=$3 what=$4
  shift 4
  for _ in $(seq 100); do
    if ! kill -0 "$pid" 2>/dev/null; then
      cat "$log" >&2 || true
      die "$name exited during start-up"
    fi
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$log" >&2 || true
  die "$name did not answer on $what within 10 s"
}

wait_http() {  # wait_http URL PID NAME LOG: until URL answers any HTTP status, at most 10 s
  local url=$1 pid=$2 name=$3 log=$4
  wait_ready "$name" "$pid" "$log" "$url" curl -s -o /dev/null --max-time 1 "$url"
}

# check_http NAME DESC URL EXPECT CURL_ARG...: one curl before wrk runs. $TMP/raw/NAME.check
# gets "200" when the answer was 200 and, if EXPECT ("header: value", several separated by
# ";") is not empty, carried each header with its value (case-insensitive); otherwise it gets
# what was seen, and `curl -sv` is printed loudly (headed by DESC) and kept in
# $TMP/raw/NAME.curl. The reports flag every check that is not "200".
check_http() {
  local name=$1 desc=$2 url=$3 expect=$4 status seen verdict want wanted
  shift 4
  status=$(curl -s -o /dev/null -D "$TMP/raw/$name.headers" -w '%{http_code}' --max-time 10 \
    "$@" "$url" || true)
  verdict=${status:-none}
  if [[ $verdict == 200 && -n $expect ]]; then
    IFS=';' read -ra wanted <<<"$expect"
    for want in "${wanted[@]}"; do
      want=${want# }
      seen=$(tr -d '\r' <"$TMP/raw/$name.headers" | grep -i "^${want%%:*}:" | head -1 || true)
      if [[ ${seen,,} != "${want,,}" ]]; then
        verdict="200 without '$want' (got '${seen:-no such header}')"
        break
      fi
    done
  fi
  rm -f "$TMP/raw/$name.headers"
  echo "$verdict" >"$TMP/raw/$name.check"
  if [[ $verdict != 200 ]]; then
    {
      echo "!!!! $desc answered '$verdict', not 200${expect:+ with '$expect'}"
      curl -sv --max-time 10 "$@" "$url" 2>&1 || true
      echo
    } | tee "$TMP/raw/$name.curl" >&2
  fi
}

# wrk_run LABEL OUT URL SCRIPT [HOOK...]: a warm-up of WARMUP, then DURATION measured into OUT
# (wrk --latency output), both with CONNECTIONS; HOOK, a command, runs between the two (to
# read counters the measured run starts from). wrk runs on the wrk core, bounded by `timeout`.
wrk_run() {
  local label=$1 out=$2 url=$3 script=$4
  shift 4
  echo "  $label: warm-up $WARMUP, then $DURATION" >&2
  wrk_once "$CONNECTIONS" "$WARMUP" /dev/null "$url" "$script"
  if (( $# )); then "$@"; fi
  wrk_once "$CONNECTIONS" "$DURATION" "$out" "$url" "$script"
}

# wrk_once CONNS DURATION OUT URL SCRIPT: one `wrk --latency` run into OUT, on the wrk core,
# with THREADS threads (fewer if CONNS is smaller), bounded by `timeout`.
wrk_once() {
  local conns=$1 duration=$2 out=$3 url=$4 script=$5 threads=$THREADS
  (( threads > conns )) && threads=$conns
  timeout "$WRK_LIMIT" ${PIN_WRK[@]+"${PIN_WRK[@]}"} "$WRK" -t"$threads" -c"$conns" \
    -d"$duration" --latency -s "$script" "$url" >"$out"
}

# --- the three bench requests (bench/wrk/<name>.lua sends the same bytes) -----------------
request_method() { [[ $1 == models ]] && echo GET || echo POST; }
request_path() {
  case $1 in
    models) echo /v1/models ;;
    moderations) echo /v1/moderations ;;
    images) echo /v1/images/generations ;;
    *) die "unknown request '$1'" ;;
  esac
}
request_body() {
  case $1 in
    models) echo "" ;;
    moderations) echo '{"input": "I want to kill them.", "model": "omni-moderation-latest"}' ;;
    images) echo '{"prompt": "A cute baby sea otter", "n": 1, "size": "1024x1024"}' ;;
    *) die "unknown request '$1'" ;;
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

# check_request NAME BASE REQ [EXPECT]: check_http of request REQ on BASE, saved as NAME-REQ.
check_request() {
  local name=$1 base=$2 req=$3 expect=${4:-} args=()
  mapfile -t args < <(curl_args "$req")
  check_http "$name-$req" "$name $(request_method "$req") $(request_path "$req")" \
    "$base$(request_path "$req")" "$expect" "${args[@]}"
}

# --- nginx --------------------------------------------------------------------------------

# nginx_conf DIR SERVERS [MAIN]: a whole nginx.conf for one worker with its pid, log and temp
# files in DIR, no access log, long keep-alive, and the http-level lines SERVERS (MAIN: more
# main-context lines).
nginx_conf() {
  local dir=$1 servers=$2 main=${3:+$3
}
  cat <<EOF
${main}worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  server_tokens off;
  keepalive_requests 100000;
  keepalive_timeout 75s;
  client_body_temp_path $dir/client_body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
$servers
}
EOF
}

# canned_server PORT [EXTRA]: the server block answering like OpenAI with canned JSON for
# GET /v1/models, POST /v1/moderations and POST /v1/images/generations (404 elsewhere), and
# nginx's stub_status on /nginx_status (see upstream_count); EXTRA is added as more locations.
canned_server() {
  local port=$1 extra=${2:-}
  cat <<EOF
  server {
    listen 127.0.0.1:$port;
    default_type application/json;
    add_header x-request-id req_bench0123456789 always;
    location = /v1/models {
      return 200 '{"object":"list","data":[{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"},{"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"system"},{"id":"omni-moderation-latest","object":"model","created":1731689265,"owned_by":"system"},{"id":"dall-e-2","object":"model","created":1698798177,"owned_by":"system"},{"id":"text-embedding-3-small","object":"model","created":1705948997,"owned_by":"system"}]}';
    }
    location = /v1/moderations {
      return 200 '{"id":"modr-bench0123456789","model":"omni-moderation-latest","results":[{"flagged":false,"categories":{"harassment":false,"harassment/threatening":false,"hate":false,"hate/threatening":false,"illicit":false,"illicit/violent":false,"self-harm":false,"self-harm/intent":false,"self-harm/instructions":false,"sexual":false,"sexual/minors":false,"violence":false,"violence/graphic":false},"category_scores":{"harassment":0.0215,"harassment/threatening":0.0094,"hate":0.0027,"hate/threatening":0.0006,"illicit":0.0012,"illicit/violent":0.0009,"self-harm":0.0004,"self-harm/intent":0.0002,"self-harm/instructions":0.0002,"sexual":0.0001,"sexual/minors":0.0000,"violence":0.0171,"violence/graphic":0.0031}}]}';
    }
    location = /v1/images/generations {
      return 200 '{"created":1713833628,"data":[{"url":"https://oaidalleapiprodscus.blob.core.windows.net/private/org-bench/user-bench/img-bench0123456789.png"}]}';
    }
    location / {
      return 404 '{"error":{"message":"Unknown request URL.","type":"invalid_request_error","param":null,"code":"unknown_url"}}';
    }
    location = /nginx_status {
      stub_status;
    }$extra
  }
EOF
}

# start_nginx NAME DIR READY_URL: test DIR/nginx.conf, start it on the server core, wait until
# READY_URL answers; the pid is left in SPAWNED.
start_nginx() {
  local name=$1 dir=$2 url=$3
  "$NGINX" -t -q -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" \
    || die "$name config test failed"
  spawn - - "$NGINX" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
  wait_http "$url" "$SPAWNED" "$name" "$dir/error.log"
}

# start_canned_upstream [EXTRA]: the canned nginx on a free port, in $TMP/nginx; sets
# NGINX_PORT, NGINX_PID and UPSTREAM (its base URL).
start_canned_upstream() {
  mkdir -p "$TMP/nginx"
  NGINX_PORT=$(free_port)
  nginx_conf "$TMP/nginx" "$(canned_server "$NGINX_PORT" "${1:-}")" >"$TMP/nginx/nginx.conf"
  UPSTREAM=http://127.0.0.1:$NGINX_PORT
  start_nginx nginx "$TMP/nginx" "$UPSTREAM/v1/models"
  NGINX_PID=$SPAWNED
}

# upstream_count: the requests the canned upstream has handled, this stub_status read included
# (empty if it cannot be read).
upstream_count() {
  curl -sf --max-time 5 "$UPSTREAM/nginx_status" | awk 'NR == 3 { print $3 }' || true
}

# nginx_run_as: the main-context line an nginx needs to write its caches and temp files in
# $TMP (mode 0700): run as root, its worker would otherwise become nobody.
nginx_run_as() { (( EUID == 0 )) && echo "user root;" || true; }

# proxy_server PORT [LOCATION_EXTRA] [HTTP_EXTRA]: an nginx server block on PORT passing every
# request to the canned upstream (NGINX_PORT) over HTTP/1.1 keep-alive connections (upstream
# `keepalive 32`); LOCATION_EXTRA goes into its location, HTTP_EXTRA before it (proxy_cache).
proxy_server() {
  local port=$1 location=${2:-} http=${3:-}
  cat <<EOF
$http
  upstream canned {
    server 127.0.0.1:$NGINX_PORT;
    keepalive 32;
  }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://canned;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
$location
    }
  }
EOF
}

# start_nginx_proxy NAME [LOCATION_EXTRA] [HTTP_EXTRA]: a second nginx (one worker) with
# proxy_server on a free port, in $TMP/NAME; sets PROXY_URL and PROXY_PID.
start_nginx_proxy() {
  local name=$1 port
  mkdir -p "$TMP/$name"
  port=$(free_port)
  nginx_conf "$TMP/$name" "$(proxy_server "$port" "${2:-}" "${3:-}")" "$(nginx_run_as)" \
    >"$TMP/$name/nginx.conf"
  PROXY_URL=http://127.0.0.1:$port
  start_nginx "$name" "$TMP/$name" "$PROXY_URL/v1/models"
  PROXY_PID=$SPAWNED
  echo "$name: nginx on 127.0.0.1:$port before the canned upstream" >&2
}

# --- the floor, Tollgate and redis-server -------------------------------------------------

start_floor() {  # start_floor: bench/floor.py before UPSTREAM; sets FLOOR_URL and FLOOR_PID
  local port
  port=$(free_port)
  spawn "$TMP/floor.log" "$TMP/floor.log" \
    "$PY" bench/floor.py --port "$port" --upstream "$UPSTREAM"
  FLOOR_PID=$SPAWNED
  FLOOR_URL=http://127.0.0.1:$port
  wait_http "$FLOOR_URL/v1/models" "$FLOOR_PID" floor "$TMP/floor.log"
  echo "floor: bench/floor.py on 127.0.0.1:$port" >&2
}

# start_tollgate NAME CONFIG [VAR=value...]: one Tollgate worker on a free port before
# UPSTREAM (upstream key sk-bench), with policy file CONFIG, a JSON log to /dev/null (stderr
# in $TMP/NAME.log) and the given environment; sets TOLLGATE_URL and TOLLGATE_PID.
start_tollgate() {
  local name=$1 config=$2 port
  shift 2
  port=$(free_port)
  spawn /dev/null "$TMP/$name.log" \
    env TOLLGATE_UPSTREAM__BASE_URL="$UPSTREAM" TOLLGATE_UPSTREAM__API_KEY=sk-bench \
    TOLLGATE_LOG__FORMAT=json TOLLGATE_DATA_FILE="$TMP/keys-$name.json" "$@" \
    "$TOLLGATE" serve --host 127.0.0.1 --port "$port" --config "$config"
  TOLLGATE_PID=$SPAWNED
  TOLLGATE_URL=http://127.0.0.1:$port
  wait_http "$TOLLGATE_URL/healthz" "$TOLLGATE_PID" "$name" "$TMP/$name.log"
  echo "$name: Tollgate on 127.0.0.1:$port, $config${*:+, $*}" >&2
}

stop_tollgate() {  # stop_tollgate NAME: stop TOLLGATE_PID; show its stderr if it wrote any
  stop_server "$TOLLGATE_PID"
  if [[ -s $TMP/$1.log ]]; then
    echo "$1 stderr:" >&2
    tail -n 20 "$TMP/$1.log" >&2
  fi
}

# start_redis [side]: a redis-server on a free loopback port, no persistence, on the servers'
# core (with "side", on wrk's: standing in for a Redis on another machine); sets REDIS_PORT,
# REDIS_PID, REDIS_URL and REDIS_VERSION. REDIS_SERVER and REDIS_CLI name the tools.
start_redis() {
  local where=${1:-} launch=spawn
  REDIS_SERVER=${REDIS_SERVER:-redis-server}
  REDIS_CLI=${REDIS_CLI:-redis-cli}
  command -v "$REDIS_SERVER" >/dev/null || die "redis-server not found (apt-get install -y redis-server)"
  command -v "$REDIS_CLI" >/dev/null || die "redis-cli not found (apt-get install -y redis-tools)"
  [[ $where == side ]] && launch=spawn_side
  mkdir -p "$TMP/redis"
  REDIS_PORT=$(free_port)
  $launch "$TMP/redis/redis.log" "$TMP/redis/redis.log" \
    "$REDIS_SERVER" --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
    --dir "$TMP/redis" --daemonize no --protected-mode yes
  REDIS_PID=$SPAWNED
  REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
  wait_ready redis-server "$REDIS_PID" "$TMP/redis/redis.log" "127.0.0.1:$REDIS_PORT" \
    timeout 2 "$REDIS_CLI" -h 127.0.0.1 -p "$REDIS_PORT" ping
  REDIS_VERSION=$("$REDIS_SERVER" --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')
  echo "redis-server $REDIS_VERSION on 127.0.0.1:$REDIS_PORT${where:+ (on the wrk core)}" >&2
}

# --- report metadata ----------------------------------------------------------------------

# write_meta FILE WHAT: the machine and parameter lines of the report (key=value), with WHAT
# saying what DURATION applies to; warns when the machine is already busy. Scripts append
# their own lines, then `load_after FILE` at the end.
write_meta() {
  local file=$1 what=$2
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
    echo "tollgate=$("$PY" -c 'import proxy; print(proxy.__version__)') (commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), working tree as run)"
    echo "duration=$DURATION $what, after a $WARMUP warm-up"
    echo "connections=$CONNECTIONS"
    echo "threads=$THREADS"
    echo "workers=1 process per server (nginx: worker_processes 1; floor and Tollgate: one event loop, uvloop)"
    echo "pinning=$PINNING"
    echo "upstream=nginx on 127.0.0.1 returning canned OpenAI-shaped JSON (keepalive_requests 100000, access_log off)"
  } >"$file"
  echo "load before=$LOAD_BEFORE (1-minute load average, /proc/loadavg)" >"$TMP/meta-load.txt"
}

load_after() {  # load_after FILE: append the load averages before and after the run
  local file=$1 load
  read -r load _ < /proc/loadavg
  echo "load after=$load (includes the benchmark's own load; about 2 is expected)" \
    >>"$TMP/meta-load.txt"
  cat "$TMP/meta-load.txt" >>"$file"
}
