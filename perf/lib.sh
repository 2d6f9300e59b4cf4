# Shared helpers for perf/*.sh (sourced, not run).
# Starts and stops only the servers it started itself, by PID.

set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$PERF_DIR/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_DIR/target}
BIN="$CARGO_TARGET_DIR/release/roomcast"
SECRET=${SECRET:-perf-secret-0123456789}
WORK=$(mktemp -d -t roomcast-perf.XXXXXX)
SERVER_PID=""
SERVER_PORT=""

build_release() {
    (cd "$REPO_DIR" && cargo build --release --quiet)
}

mint_token() {
    "$BIN" token --secret "$SECRET" --sub u1 --ttl 3600
}

# start_server ARGS... : fresh server on 127.0.0.1:0, run under the
# command SERVER_WRAPPER (an array, e.g. valgrind) if set; sets SERVER_PID
# and SERVER_PORT.
start_server() {
    : >"$WORK/server.out"
    ${SERVER_WRAPPER[@]+"${SERVER_WRAPPER[@]}"} "$BIN" serve --bind 127.0.0.1:0 --jwt-secret "$SECRET" --log-level warn "$@" \
        >"$WORK/server.out" 2>>"$WORK/server.err" &
    SERVER_PID=$!
    for _ in $(seq 400); do
        if grep -q 'roomcast listening on' "$WORK/server.out"; then
            SERVER_PORT=$(sed -n 's/^roomcast listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/server.out")
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited at start" >&2; cat "$WORK/server.err" >&2; return 1; }
        sleep 0.05
    done
    echo "server did not start" >&2
    stop_server
    return 1
}

# stop_server: SIGTERM our server and wait for it (bounded: SIGKILL after 15 s).
stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 150); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$SERVER_PID" 2>/dev/null && kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# free_port: a loopback port nobody listens on now.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# http_status PORT PATH: the status of GET http://127.0.0.1:PORT/PATH (0: none).
http_status() {
    python3 - "$1" "$2" <<'PY' 2>/dev/null || echo 0
import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}{sys.argv[2]}", timeout=2).status)
except urllib.error.HTTPError as e:
    print(e.code)
PY
}

# children_of PID: the PIDs of PID's live children (from /proc).
children_of() {
    for stat in /proc/[0-9]*/stat; do
        awk -v p="$1" '{ sub(/^.*\) /, ""); if ($2 == p && $1 != "Z") print FILENAME }' "$stat" 2>/dev/null
    done | sed 's|/proc/\([0-9]*\)/stat|\1|'
}

# node_pids SUPERVISOR PROCESSES: the PIDs of a `serve --processes`
# server's nodes, space-separated, once all are up (20 s at most); the
# server's own PID when it runs as one process.
node_pids() {
    local pids=""
    for _ in $(seq 200); do
        sleep 0.1
        if [ "$2" -eq 1 ]; then pids=$1; break; fi
        pids=$(children_of "$1" | tr '\n' ' ')
        [ "$(wc -w <<<"$pids")" -eq "$2" ] && break
    done
    echo $pids
}

# wait_measuring ERRFILE PID: until `roomcast bench` (PID, stderr in
# ERRFILE) has its connections open and starts its measured window.
wait_measuring() {
    wait_bench_says "$1" "$2" 'measuring for'
}

# wait_bench_says ERRFILE PID TEXT: until `roomcast bench` (PID, stderr in
# ERRFILE) prints TEXT (polled every 20 ms, for at most 5 min); fails if it
# exits first.
wait_bench_says() {
    for _ in $(seq 15000); do
        grep -q "$3" "$1" && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.02
    done
    return 1
}

# The bench arguments of a case (after `roomcast bench`, before --addr).
case_args() {
    case $1 in
        echo-32) echo "echo -c 64 -s 32 -w 16" ;;
        echo-1k) echo "echo -c 64 -s 1024 -w 16" ;;
        fanout-1k) echo "fanout -c 1000 --rooms 1 --publishers 1 -s 64 --rate 0" ;;
        fanout-10k) echo "fanout -c 10000 --rooms 1 --publishers 1 -s 64 --rate 0" ;;
        fanout-1k-20) echo "fanout -c 1000 --rooms 1 --publishers 1 -s 64 --rate 20" ;;
        fanout-1k-100) echo "fanout -c 1000 --rooms 1 --publishers 1 -s 64 --rate 100" ;;
        # The same offered load for every server, whatever its queues do.
        fanout-1k-200) echo "fanout -c 1000 --rooms 1 --publishers 1 -s 64 --rate 200" ;;
        fanout-10k-20) echo "fanout -c 10000 --rooms 1 --publishers 1 -s 64 --rate 20" ;;
        # A peer's publisher is bound to one room's path, so 10 publishers would
        # reach only 10 of the 1,000 rooms: one publisher per room, for every
        # server. The window is per room (a probe subscriber per room).
        fanout-rooms) echo "fanout -c 10000 --rooms 1000 --publishers 1000 -s 64 --rate 0 -w 1" ;;
        fanout-rooms-w16) echo "fanout -c 10000 --rooms 1000 --publishers 1000 -s 64 --rate 0 -w 16" ;;
        idle-10k) echo "idle -c 10000 --rooms 1" ;;
        idle-19k) echo "idle -c 19000 --rooms 1" ;;
        # fanout-1k with a payload of N bytes, for sweeps over frame sizes.
        fanout-1k-s[0-9]*) echo "fanout -c 1000 --rooms 1 --publishers 1 -s ${1#fanout-1k-s} --rate 0" ;;
        *) return 1 ;;
    esac
}

# start_pinned_roomcast BIN [WRAPPER...]: a fresh roomcast server with the
# flags of compare.sh's runs (`--shards 1`, `--echo`, a 512 KiB bound) on
# 127.0.0.1:0, pinned to SERVER_CORE, run under WRAPPER if given (e.g.
# valgrind); sets SERVER_PID and SERVER_PORT (empty if it did not start).
start_pinned_roomcast() {
    local bin=$1
    shift
    : >"$WORK/server.err"
    taskset -c "${SERVER_CORE:-0}" "$@" "$bin" serve --bind 127.0.0.1:0 --shards 1 \
        --jwt-secret "$SECRET" --echo --max-write-buffer 512KiB --log-level warn \
        >"$WORK/server.out" 2>"$WORK/server.err" &
    SERVER_PID=$!
    await_listening
}

# fanout_ab_run SCRIPT MODE OUT BENCH_ARGS...: one A/B run of the
# delta, msgpack and max-rate scripts: a fresh pinned roomcast server,
# `bench fanout` from one publisher at RATE messages/s into one room of
# CONNS subscribers for DURATION (`--threads 1`, pinned to BENCH_CORE, with
# BENCH_ARGS), its JSON line with `"mode": MODE` added appended to OUT.
fanout_ab_run() {
    local script=$1 mode=$2 out=$3
    shift 3
    start_pinned_roomcast "$BIN" || { echo "$script: the server did not start" >&2; return 1; }
    local result
    result=$(taskset -c "${BENCH_CORE:-1}" "$BIN" bench fanout -c "$CONNS" --rooms 1 --publishers 1 \
        --rate "$RATE" -d "$DURATION" --threads 1 "$@" \
        --addr "127.0.0.1:$SERVER_PORT" --jwt-secret "$SECRET" --server-pid "$SERVER_PID" --json 2>/dev/null)
    stop_server
    echo "${result%\}},\"mode\":\"$mode\"}" >>"$out"
}

# start_pinned_peer BIN: a fresh benchmark peer (perf/peers: `BIN 0`,
# `PEER_THREADS=1`) pinned to SERVER_CORE; sets SERVER_PID and SERVER_PORT.
start_pinned_peer() {
    : >"$WORK/server.err"
    PEER_THREADS=1 taskset -c "${SERVER_CORE:-0}" "$1" 0 \
        >"$WORK/server.out" 2>"$WORK/server.err" &
    SERVER_PID=$!
    await_listening
}

# await_listening: until the server SERVER_PID prints `listening on
# 127.0.0.1:PORT` into $WORK/server.out; sets SERVER_PORT, or stops it.
await_listening() {
    SERVER_PORT=""
    for _ in $(seq 400); do
        SERVER_PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$WORK/server.out" | head -1)
        [ -n "$SERVER_PORT" ] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    stop_server
    return 1
}

# server_metric NAME: the sum of the lines of counter NAME in the server's /metrics.
server_metric() {
    python3 - "$SERVER_PORT" "$1" <<'PY'
import sys, urllib.request
body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
print(int(sum(float(l.split()[-1]) for l in body.splitlines() if l.startswith(sys.argv[2]))))
PY
}

# start_redis: a fresh redis-server on a free loopback port, no persistence;
# sets REDIS_PID, REDIS_PORT and REDIS_URL. stop_redis stops it by PID.
REDIS_PID=""
start_redis() {
    local port; port=$(free_port)
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
    REDIS_PID=$!
    for _ in $(seq 100); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && break
        sleep 0.05
    done
    REDIS_URL="redis://127.0.0.1:$port"
    REDIS_PORT=$port
}

stop_redis() {
    [ -n "$REDIS_PID" ] || return 0
    kill "$REDIS_PID" 2>/dev/null; wait "$REDIS_PID" 2>/dev/null
    REDIS_PID=""
}

cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
