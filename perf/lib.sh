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

# start_server ARGS... : fresh server on 127.0.0.1:0; sets SERVER_PID and SERVER_PORT.
start_server() {
    : >"$WORK/server.out"
    "$BIN" serve --bind 127.0.0.1:0 --jwt-secret "$SECRET" --log-level warn "$@" \
        >"$WORK/server.out" 2>>"$WORK/server.err" &
    SERVER_PID=$!
    for _ in $(seq 100); do
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

# wait_measuring ERRFILE PID: until `roomcast bench` (PID, stderr in
# ERRFILE) has its connections open and starts its measured window.
wait_measuring() {
    for _ in $(seq 6000); do
        grep -q 'measuring for' "$1" && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
