#!/usr/bin/env bash
# Server API timings (perf/api_client.py does the calls and the timing):
#
#   latency  `subscribe` and `disconnect` p50/p99 over one keep-alive HTTP
#            connection, configurations alternated per run:
#              single         one process, no Redis; API and users on it
#              cluster-local  two nodes on Redis; API and users on node A
#              cluster-cross  two nodes on Redis; API on A, users on B
#   rooms    `rooms` with 100,000 rooms with members over two nodes (half
#            on each): reply time, reply size, server CPU per call per thread
#   contend  the same 100,000 rooms; a `roomcast bench` fan-out on node A
#            with the API idle and with `rooms` called on A back to back
#            (then once a second), alternated; delivery p99 and the ratio;
#            then one run in which the 100,000 rooms' members all disconnect
#
#   perf/api.sh                        # everything (about 6 min)
#   PARTS=latency RUNS=5 perf/api.sh
#
# Knobs: PARTS ("latency rooms contend"), RUNS (3: latency and rooms runs per
# configuration), USERS (100: 1 and 2 connections alternating),
# ITERATIONS (1000: each 2 subscribes and a disconnect), SHARDS (2 per
# node), CONNS (20), ROOMS_PER_CONN (5000), CALLS (20 rooms calls per run),
# REPS (3 pairs per contend), INTERVALS ("0 1": seconds between rooms calls),
# CLOSE_AFTER (6: a last fan-out run in which every member connection is
# reset this many seconds in, so 100,000 rooms are left at once; 0: none),
# CLOSE_ON (all; a or b: only the members on node A or B, 50,000 rooms),
# CONTEND_CONFIG (cluster; single: one process, no Redis, members and fan-out
# on it), BENCH_NODE (a: the fan-out on the node the API is called on; b:
# on the other),
# BENCH_ARGS (the fan-out). Every server, Redis and client is on 127.0.0.1,
# bounded in count and time; only the processes started here are stopped,
# by PID. Raw JSON lines go to perf/results/api-<timestamp>.jsonl.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
set +e
PARTS=${PARTS:-"latency rooms contend"}
RUNS=${RUNS:-3}
USERS=${USERS:-100}
ITERATIONS=${ITERATIONS:-1000}
SHARDS=${SHARDS:-2}
CONNS=${CONNS:-20}
ROOMS_PER_CONN=${ROOMS_PER_CONN:-5000}
CALLS=${CALLS:-20}
REPS=${REPS:-3}
INTERVALS=${INTERVALS:-"0 1"}
CLOSE_AFTER=${CLOSE_AFTER:-6}
CLOSE_ON=${CLOSE_ON:-all}
CONTEND_CONFIG=${CONTEND_CONFIG:-cluster}
BENCH_NODE=${BENCH_NODE:-a}
BENCH_ARGS=${BENCH_ARGS:-"fanout -c 1000 --rooms 1 --publishers 1 -s 64 --rate 200 -d 10s"}
KEY=perf-api-key
OUT="$PERF_DIR/results/api-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
mkdir -p "$PERF_DIR/results"
CLIENT=(timeout 600 python3 "$PERF_DIR/api_client.py")
NODE_PIDS=()

# start_node NAME [ARGS...]: sets NODE_PORT and NODE_PID.
start_node() {
    local name=$1; shift
    : >"$WORK/$name.out"
    "$BIN" serve --bind 127.0.0.1:0 --jwt-secret "$SECRET" --api-key "$KEY" --log-level warn \
        --rate-limit 0 --shards "$SHARDS" --max-rooms-per-connection 10000 "$@" \
        >"$WORK/$name.out" 2>>"$WORK/$name.err" &
    NODE_PID=$!
    NODE_PIDS+=("$NODE_PID")
    NODE_PORT=""
    for _ in $(seq 200); do
        NODE_PORT=$(sed -n 's/^roomcast listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/$name.out")
        [ -n "$NODE_PORT" ] && return 0
        kill -0 "$NODE_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "api: node $name did not start" >&2
    cat "$WORK/$name.err" >&2
    return 1
}

# wait_nodes PORT N: until `info` on PORT lists N live nodes (at most 10 s).
wait_nodes() {
    for _ in $(seq 100); do
        python3 - "$1" "$2" "$KEY" <<'PY' && return 0
import json, sys, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/api/info", data=b"{}",
                             headers={"X-API-Key": sys.argv[3]})
try:
    nodes = json.load(urllib.request.urlopen(req, timeout=2))["result"]["nodes"]
except Exception:
    sys.exit(1)
sys.exit(0 if len(nodes) == int(sys.argv[2]) else 1)
PY
        sleep 0.1
    done
    echo "api: the nodes did not see each other" >&2
    return 1
}

# start_config single|cluster: sets A_PORT, A_PID (and B_PORT, B_PID).
start_config() {
    NODE_PIDS=()
    if [ "$1" = single ]; then
        start_node a --node-id a || return 1
        A_PORT=$NODE_PORT A_PID=$NODE_PID B_PORT=$NODE_PORT B_PID=$NODE_PID
        return 0
    fi
    start_redis
    start_node a --redis "$REDIS_URL" --node-id a || return 1
    A_PORT=$NODE_PORT A_PID=$NODE_PID
    start_node b --redis "$REDIS_URL" --node-id b || return 1
    B_PORT=$NODE_PORT B_PID=$NODE_PID
    wait_nodes "$A_PORT" 2
}

stop_all() {
    local pid
    for pid in "${NODE_PIDS[@]}" $REDIS_PID; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${NODE_PIDS[@]}" $REDIS_PID; do
        for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    NODE_PIDS=() REDIS_PID=""
}
trap 'stop_all; cleanup' EXIT

# record CONFIG RUN: the client's JSON (stdin) with its configuration, to OUT.
record() {
    python3 -c 'import json, sys
line = sys.stdin.read().strip()
if line:
    r = json.loads(line); r["config"], r["run"] = sys.argv[1], int(sys.argv[2]); print(json.dumps(r))
else:
    print(f"api: {sys.argv[1]} run {sys.argv[2]} failed", file=sys.stderr)' "$1" "$2" >>"$OUT"
}

build_release
for part in $PARTS; do
    case $part in
    latency)
        for run in $(seq "$RUNS"); do
            for config in single cluster-local cluster-cross; do
                echo "api: latency run $run, $config" >&2
                start_config "${config%%-*}" || { stop_all; continue; }
                ws=$A_PORT
                [ "$config" = cluster-cross ] && ws=$B_PORT
                "${CLIENT[@]}" latency --api-port "$A_PORT" --ws-port "$ws" --key "$KEY" \
                    --secret "$SECRET" --users "$USERS" --iterations "$ITERATIONS" | record "$config" "$run"
                stop_all
            done
        done ;;
    rooms)
        for run in $(seq "$RUNS"); do
            echo "api: rooms run $run" >&2
            start_config cluster || { stop_all; continue; }
            "${CLIENT[@]}" rooms --api-port "$A_PORT" --ws-ports "$A_PORT,$B_PORT" --key "$KEY" \
                --secret "$SECRET" --conns "$CONNS" --rooms-per-conn "$ROOMS_PER_CONN" \
                --calls "$CALLS" --server-pids "$A_PID,$B_PID" | record rooms "$run"
            stop_all
        done ;;
    contend)
        for interval in $INTERVALS; do
            echo "api: contend, rooms every ${interval}s" >&2
            start_config "$CONTEND_CONFIG" || { stop_all; continue; }
            pids=$A_PID
            [ "$CONTEND_CONFIG" = cluster ] && pids="$A_PID,$B_PID,$REDIS_PID"
            target=$A_PORT
            [ "$BENCH_NODE" = b ] && target=$B_PORT
            bench="$BIN bench $BENCH_ARGS --addr 127.0.0.1:$target --jwt-secret $SECRET --json --server-pid $pids"
            "${CLIENT[@]}" contend --api-port "$A_PORT" --ws-ports "$A_PORT,$B_PORT" --key "$KEY" \
                --secret "$SECRET" --conns "$CONNS" --rooms-per-conn "$ROOMS_PER_CONN" \
                --reps "$REPS" --interval "$interval" --bench "$bench" \
                --close-after "$CLOSE_AFTER" --close-on "$CLOSE_ON" | record "contend-$CONTEND_CONFIG-$BENCH_NODE-$interval" 1
            stop_all
        done ;;
    esac
done

python3 "$PERF_DIR/api_report.py" "$OUT"
