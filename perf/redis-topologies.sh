#!/usr/bin/env bash
# One standalone Redis against a three-master Redis Cluster, side by side:
#
#   pubsub   Redis alone: classic PUBLISH against sharded SPUBLISH on the
#            same three-master cluster, the same messages on the same
#            channels (spread evenly over the masters, one subscriber each
#            on the master owning its slot), modes alternated
#            (perf/cluster_pubsub.py): Redis CPU per message (all three
#            redis-server processes) and the publishes each master handled.
#   fanout   roomcast: two nodes on one port (`--processes 2 --shards 1`,
#            members on both, one publisher), the same `roomcast bench
#            fanout` load over `--redis redis://…` (one redis-server) and
#            over `--redis redis+cluster://…` (three masters), alternated
#            run by run: Redis CPU per room message (every redis-server),
#            server CPU per delivery (every roomcast process), latency.
#
#   perf/redis-topologies.sh                        # both parts, 5 runs each
#   ROOMCAST_BIN=/path/to/roomcast PARTS=fanout perf/redis-topologies.sh
#   PARTS=fanout TOPOLOGIES=standalone RUNS=3 perf/redis-topologies.sh
#
# Knobs: RUNS (5), PARTS ("pubsub fanout"), TOPOLOGIES ("standalone
# cluster"), MESSAGES (100000, pubsub), CHANNELS (30, pubsub), BATCH (300
# publishes pipelined per batch, spread over the masters, pubsub; 1: one at
# a time), SIZE (64),
# SUBSCRIBERS (2000), ROOMS (12), RATE (200 room messages/s over all
# rooms), DURATION (10s). Without ROOMCAST_BIN the release binary is built.
# With BASE_BIN (another roomcast build), the topology `standalone-base`
# runs that build over one redis-server, to compare two builds side by side.
# The topology `cluster-1` is a Redis Cluster of one master holding every
# slot: what cluster mode costs a server, apart from spreading over three.
#
# Everything is on 127.0.0.1 and bounded; only the processes this script
# started are stopped, by PID. Raw results go to
# perf/results/redis-topologies-<timestamp>.jsonl; tables are printed.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
set +e
RUNS=${RUNS:-5}
PARTS=${PARTS:-"pubsub fanout"}
TOPOLOGIES=${TOPOLOGIES:-"standalone cluster"}
BASE_BIN=${BASE_BIN:-}
MESSAGES=${MESSAGES:-100000}
CHANNELS=${CHANNELS:-30}
BATCH=${BATCH:-300}
SIZE=${SIZE:-64}
SUBSCRIBERS=${SUBSCRIBERS:-2000}
ROOMS=${ROOMS:-12}
RATE=${RATE:-200}
DURATION=${DURATION:-10s}
OUT="$PERF_DIR/results/redis-topologies-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
mkdir -p "$PERF_DIR/results"
if [ -n "${ROOMCAST_BIN:-}" ]; then BIN=$ROOMCAST_BIN; else build_release; fi

# Every redis-server this script runs now: PIDs and client ports, in order.
REDIS_PIDS=()
REDIS_PORTS=()
REDIS_URL_NOW=""

start_standalone() {
    start_redis
    REDIS_PIDS=("$REDIS_PID")
    REDIS_PORTS=("$REDIS_PORT")
    REDIS_URL_NOW=$REDIS_URL
}

# MASTERS masters (3 unless given), no replicas; each one's cluster bus on
# a port of its own (cluster-port), so no port + 10000 has to be free. One
# master holds every slot itself (redis-cli --cluster create needs three).
start_cluster() {
    local masters=${1:-3}
    REDIS_PIDS=()
    REDIS_PORTS=()
    local port bus dir
    for _ in $(seq "$masters"); do
        port=$(free_port)
        bus=$(free_port)
        dir="$WORK/cluster-$port"
        mkdir -p "$dir"
        redis-server --port "$port" --cluster-port "$bus" --bind 127.0.0.1 --cluster-enabled yes \
            --cluster-config-file "$dir/nodes.conf" --dir "$dir" --save '' --appendonly no \
            >"$dir/log" 2>&1 &
        REDIS_PIDS+=($!)
        REDIS_PORTS+=("$port")
    done
    for port in "${REDIS_PORTS[@]}"; do
        for _ in $(seq 100); do
            redis-cli -p "$port" ping >/dev/null 2>&1 && break
            sleep 0.05
        done
    done
    if [ "$masters" -eq 1 ]; then
        redis-cli -p "${REDIS_PORTS[0]}" CLUSTER ADDSLOTSRANGE 0 16383 >"$WORK/cluster-create.log" 2>&1
    else
        redis-cli --cluster create $(printf '127.0.0.1:%s ' "${REDIS_PORTS[@]}") \
            --cluster-replicas 0 --cluster-yes >"$WORK/cluster-create.log" 2>&1
    fi || { echo "redis-topologies: cluster create failed" >&2; cat "$WORK/cluster-create.log" >&2; return 1; }
    # Every master must know every other and see every slot served.
    local ok
    for _ in $(seq 200); do
        ok=0
        for port in "${REDIS_PORTS[@]}"; do
            redis-cli -p "$port" CLUSTER INFO | tr -d '\r' |
                grep -q '^cluster_state:ok' && ok=$((ok + 1))
        done
        [ "$ok" -eq "$masters" ] && break
        sleep 0.05
    done
    [ "$ok" -eq "$masters" ] || { echo "redis-topologies: cluster not ok" >&2; return 1; }
    REDIS_URL_NOW="redis+cluster://$(printf '127.0.0.1:%s,' "${REDIS_PORTS[@]}" | sed 's/,$//')"
}

stop_redises() {
    local pid
    for pid in "${REDIS_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${REDIS_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    REDIS_PIDS=()
    REDIS_PORTS=()
}

# The CPU seconds of every redis-server now (getrusage, from INFO cpu).
redis_cpu_seconds() {
    local port
    for port in "${REDIS_PORTS[@]}"; do
        redis-cli -p "$port" INFO cpu | tr -d '\r' |
            awk -F: '/^used_cpu_(user|sys):/ { s += $2 } END { printf "%.6f\n", s }'
    done | awk '{ s += $1 } END { printf "%.6f\n", s }'
}

# One JSON object: per redis-server, its CPU seconds and its command calls.
redis_snapshot() {
    local port
    for port in "${REDIS_PORTS[@]}"; do
        echo "== $port"
        redis-cli -p "$port" INFO cpu | tr -d '\r'
        redis-cli -p "$port" INFO stats | tr -d '\r' | grep '^total_\(reads\|writes\)_processed:'
        redis-cli -p "$port" INFO commandstats | tr -d '\r'
        redis-cli -p "$port" CLUSTER INFO 2>/dev/null | tr -d '\r' | grep '^cluster_stats' || true
    done | python3 -c '
import json, sys
out, cur = [], None
for line in sys.stdin:
    line = line.strip()
    if line.startswith("== "):
        cur = {"port": int(line[3:]), "cpu": 0.0, "calls": {}, "bus": {}, "io": {}}
        out.append(cur)
    elif line.startswith("used_cpu_user:") or line.startswith("used_cpu_sys:"):
        cur["cpu"] += float(line.split(":")[1])
    elif line.startswith("total_"):
        key, value = line[6:].split(":")
        cur["io"][key] = int(value)
    elif line.startswith("cmdstat_"):
        name, rest = line[8:].split(":", 1)
        cur["calls"][name] = int(dict(kv.split("=") for kv in rest.split(","))["calls"])
    elif line.startswith("cluster_stats_messages_"):
        key, value = line[23:].split(":")
        cur["bus"][key] = int(value)
print(json.dumps(out))'
}

part_pubsub() {
    echo "redis-topologies: pubsub, $RUNS runs of $MESSAGES messages per mode" >&2
    start_cluster || { stop_redises; return 1; }
    timeout 1800 python3 "$PERF_DIR/cluster_pubsub.py" \
        --ports "$(IFS=,; echo "${REDIS_PORTS[*]}")" --pids "$(IFS=,; echo "${REDIS_PIDS[*]}")" \
        --messages "$MESSAGES" --runs "$RUNS" --channels "$CHANNELS" --size "$SIZE" --batch "$BATCH" |
        python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    r["part"] = "pubsub"
    print(json.dumps(r), flush=True)' >>"$OUT"
    stop_redises
}

fanout_one() { # TOPOLOGY RUN
    local topology=$1 run=$2 port
    local bin=$BIN
    case "$topology" in
        standalone) start_standalone ;;
        standalone-base) bin=$BASE_BIN; start_standalone ;;
        cluster) start_cluster 3 || { stop_redises; return 1; } ;;
        cluster-1) start_cluster 1 || { stop_redises; return 1; } ;;
    esac
    # Chosen once Redis listens, so that no redis-server takes it meanwhile.
    port=$(free_port)
    : >"$WORK/server.err"
    "$bin" serve --bind "127.0.0.1:$port" --jwt-secret "$SECRET" --log-level warn --rate-limit 0 \
        --redis "$REDIS_URL_NOW" --processes 2 --shards 1 >"$WORK/server.out" 2>>"$WORK/server.err" &
    SERVER_PID=$!
    local nodes="" healthy=0
    for _ in $(seq 300); do
        sleep 0.05
        kill -0 "$SERVER_PID" 2>/dev/null || break
        nodes=$(children_of "$SERVER_PID" | tr '\n' ',' | sed 's/,$//')
        [ "$(tr ',' '\n' <<<"$nodes" | grep -c .)" -eq 2 ] || continue
        [ "$(http_status "$port" /healthz)" = 200 ] && { healthy=1; break; }
    done
    if [ "$healthy" -ne 1 ]; then
        echo "redis-topologies: $topology nodes did not start:" >&2
        tail -5 "$WORK/server.err" >&2
        stop_server
        stop_redises
        return 1
    fi
    # Redis' idle CPU (timers, heartbeats of the nodes and of the cluster
    # bus), taken off below.
    local idle0 idle1 t0 t1
    idle0=$(redis_cpu_seconds); t0=$(date +%s.%N)
    sleep 2
    idle1=$(redis_cpu_seconds); t1=$(date +%s.%N)
    : >"$WORK/bench.err"
    : >"$WORK/bench.json"
    # One load generator for every topology and build: ROOMCAST_BIN's.
    timeout 300 "$BIN" bench fanout --addr "127.0.0.1:$port" --jwt-secret "$SECRET" \
        -c "$SUBSCRIBERS" --rooms "$ROOMS" --publishers 1 -s "$SIZE" --rate "$RATE" -d "$DURATION" \
        --json --server-pid "$SERVER_PID,$nodes" >"$WORK/bench.json" 2>>"$WORK/bench.err" &
    local bench=$! before after w0 w1
    # Redis over the measured window alone, less its last second, so that no
    # close (a member leaving) falls in it whatever the snapshots' own delay.
    wait_measuring "$WORK/bench.err" "$bench"
    w0=$(date +%s.%N); before=$(redis_snapshot)
    sleep "$(awk -v d="${DURATION%s}" 'BEGIN { print (d > 2 ? d - 1 : d / 2) }')"
    w1=$(date +%s.%N); after=$(redis_snapshot)
    wait "$bench"
    if [ ! -s "$WORK/bench.json" ]; then
        echo "redis-topologies: $topology run $run failed:" >&2
        tail -3 "$WORK/bench.err" "$WORK/server.err" >&2
    else
        python3 - "$topology" "$run" "$WORK/bench.json" "$idle0" "$idle1" "$t0" "$t1" "$w0" "$w1" \
            "$before" "$after" "$REDIS_URL_NOW" >>"$OUT" <<'PY'
import json, sys
topology, run, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
idle0, idle1, t0, t1, w0, w1 = map(float, sys.argv[4:10])
before, after = json.loads(sys.argv[10]), json.loads(sys.argv[11])
r = json.loads(open(path).read().strip())
idle_per_second = (idle1 - idle0) / (t1 - t0)
window = w1 - w0
servers = []
for b, a in zip(before, after):
    calls = {k: v - b["calls"].get(k, 0) for k, v in a["calls"].items() if v != b["calls"].get(k, 0)}
    bus = {k: v - b["bus"].get(k, 0) for k, v in a["bus"].items() if v != b["bus"].get(k, 0)}
    io = {k: v - b["io"].get(k, 0) for k, v in a["io"].items()}
    servers.append({"port": a["port"], "cpu_s": a["cpu"] - b["cpu"], "calls": calls, "bus": bus, "io": io})
busy = sum(s["cpu_s"] for s in servers) - idle_per_second * window
# The publisher is paced: the room messages of the sampled window are its
# rate times the window (the bench's own count covers its whole window).
messages = r["rate"] * window
r.update(part="fanout", topology=topology, run=run, redis_url=sys.argv[12], redis_servers=servers,
         redis_idle_cpu_per_second=idle_per_second, redis_window_s=window, redis_window_messages=messages,
         redis_cpu_us_per_message=busy * 1e6 / messages)
print(json.dumps(r))
PY
    fi
    stop_server
    stop_redises
}

part_fanout() {
    local run topology
    for run in $(seq "$RUNS"); do
        for topology in $TOPOLOGIES; do
            echo "redis-topologies: fanout run $run, $topology" >&2
            fanout_one "$topology" "$run"
        done
    done
}

trap 'stop_server; stop_redises; rm -rf "$WORK"' EXIT
for part in $PARTS; do
    "part_$part"
done
[ -s "$OUT" ] || { echo "redis-topologies: no results" >&2; exit 1; }

python3 "$PERF_DIR/topologies_report.py" "$OUT"
