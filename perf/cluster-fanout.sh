#!/usr/bin/env bash
# Cross-node fan-out: 10,000 subscribers of one room, one publisher, the
# same offered load for every configuration, side by side in one run:
#
#   embedded   one process, no Redis (--shards 2)
#   cluster-1  one node on Redis (--shards 2)
#   cluster-2  two nodes on one port, --processes 2 (--shards 1 each)
#   cluster-4  four nodes on one port, --processes 4 (--shards 1 each)
#
# With --processes the kernel spreads the subscribers and the publisher over
# the nodes, so most subscribers are on another node than the publisher.
# The CPU per delivery is the server side's total over the measured window:
# every node plus redis-server (`roomcast bench --server-pid` sums them).
# Redis' own CPU per room message is measured over the same window.
#
#   perf/cluster-fanout.sh                 # 3 runs each, 10 s windows
#   RUNS=1 DURATION=5s perf/cluster-fanout.sh
#
# Everything is on 127.0.0.1, each run is bounded, and only the processes
# this script started are stopped, by PID. Raw results go to
# perf/results/cluster-fanout-<timestamp>.jsonl; a table is printed.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
set +e
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
RATE=${RATE:-10}
SUBSCRIBERS=${SUBSCRIBERS:-10000}
CONFIGS=${CONFIGS:-"embedded cluster-1 cluster-2 cluster-4"}
OUT="$PERF_DIR/results/cluster-fanout-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
mkdir -p "$PERF_DIR/results"

# Redis' own CPU time, to the microsecond (getrusage, from INFO).
redis_cpu_seconds() {
    redis-cli -p "$REDIS_PORT" INFO cpu | tr -d '\r' |
        awk -F: '/^used_cpu_(user|sys):/ { s += $2 } END { printf "%.6f\n", s }'
}

run_one() { # CONFIG RUN
    local config=$1 run=$2 port; port=$(free_port)
    local args=(serve --bind "127.0.0.1:$port" --jwt-secret "$SECRET" --log-level warn --rate-limit 0)
    local processes=1
    case "$config" in
        embedded) args+=(--shards 2) ;;
        cluster-1) start_redis; args+=(--redis "$REDIS_URL" --shards 2) ;;
        cluster-*) start_redis; processes=${config#cluster-}
            args+=(--redis "$REDIS_URL" --processes "$processes" --shards 1) ;;
    esac
    "$BIN" "${args[@]}" >"$WORK/server.out" 2>>"$WORK/server.err" &
    SERVER_PID=$!
    local pids=""
    for _ in $(seq 200); do
        sleep 0.05
        if [ "$processes" -gt 1 ]; then
            pids=$(children_of "$SERVER_PID" | tr '\n' ',' | sed 's/,$//')
            [ "$(tr ',' '\n' <<<"$pids" | grep -c .)" -eq "$processes" ] || continue
        else
            pids=$SERVER_PID
        fi
        [ "$(http_status "$port" /healthz)" = 200 ] && break
    done
    [ -n "$REDIS_PID" ] && pids="$pids,$REDIS_PID"
    local redis_before=0 redis_after=0 redis_idle=0
    # Redis' idle CPU (its timers, the nodes' heartbeats), taken off below.
    if [ -n "$REDIS_PID" ]; then
        local idle_start; idle_start=$(redis_cpu_seconds)
        sleep 2
        redis_idle=$(awk -v a="$idle_start" -v b="$(redis_cpu_seconds)" 'BEGIN { printf "%.6f", (b - a) / 2 }')
    fi
    : >"$WORK/bench.err"
    timeout 300 "$BIN" bench fanout --addr "127.0.0.1:$port" --jwt-secret "$SECRET" \
        -c "$SUBSCRIBERS" --rooms 1 --publishers 1 -s 64 --rate "$RATE" -d "$DURATION" \
        --json --server-pid "$pids" >"$WORK/bench.json" 2>>"$WORK/bench.err" &
    local bench=$!
    # Redis' CPU over the measured window alone (not the connects and closes).
    if [ -n "$REDIS_PID" ]; then
        wait_measuring "$WORK/bench.err" "$bench"
        redis_before=$(redis_cpu_seconds)
        sleep "${DURATION%s}"
        redis_after=$(redis_cpu_seconds)
    fi
    wait "$bench"
    [ -s "$WORK/bench.json" ] || { echo "cluster-fanout: $config run $run failed:" >&2; tail -3 "$WORK/bench.err" "$WORK/server.err" >&2; }
    python3 - "$config" "$run" "$redis_before" "$redis_after" "$WORK/bench.json" "$redis_idle" "${DURATION%s}" >>"$OUT" <<'PY'
import json, sys
config, run, before, after = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
idle_per_second, window = float(sys.argv[6]), float(sys.argv[7])
line = open(sys.argv[5]).read().strip()
if line:
    r = json.loads(line)
    r["config"], r["run"] = config, run
    # Redis CPU over the measured window, less its idle CPU, per room message sent.
    busy = (after - before) - idle_per_second * window
    r["redis_cpu_us_per_message"] = busy * 1e6 / max(r["sent"], 1) if after else None
    r["redis_idle_cpu_per_second"] = idle_per_second
    print(json.dumps(r))
PY
    stop_server
    stop_redis
}

build_release
for run in $(seq "$RUNS"); do
    for config in $CONFIGS; do
        echo "cluster-fanout: run $run, $config" >&2
        run_one "$config" "$run"
    done
done

python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"raw: {sys.argv[1]}")
print("| config | deliveries/s | server CPU µs/delivery | × embedded | Redis CPU µs/message | p50 ms | p99 ms | lost | out of order |")
print("|---|---|---|---|---|---|---|---|---|")
med = lambda xs: statistics.median(xs) if xs else float("nan")
base = None
for config in ["embedded", "cluster-1", "cluster-2", "cluster-4"]:
    rs = [r for r in rows if r["config"] == config]
    if not rs:
        continue
    cpu = med([r["server"]["cpu_us_per_message"] for r in rs])
    base = cpu if config == "embedded" else base
    redis = [r["redis_cpu_us_per_message"] for r in rs if r.get("redis_cpu_us_per_message") is not None]
    print(f"| {config} | {med([r['messages_per_second'] for r in rs]):,.0f} | {cpu:.3f} | "
          f"{cpu / base if base else float('nan'):.2f} | {f'{med(redis):.1f}' if redis else '-'} | "
          f"{med([r['latency_us']['p50'] for r in rs]) / 1000:.1f} | {med([r['latency_us']['p99'] for r in rs]) / 1000:.1f} | "
          f"{sum(r['lost'] for r in rs)} | {sum(r['out_of_order'] for r in rs)} |")
PY
