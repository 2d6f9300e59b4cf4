#!/usr/bin/env bash
# Redis CPU per room message through a roomcast node under load: a node
# on a fresh loopback redis-server (--shards 2), `roomcast bench fanout`
# publishing to a few rooms at a fixed rate, Redis' CPU over the measured
# window (less its idle CPU) divided by the messages Redis sequenced in it
# (the rooms' seqs). BASELINE (a git revision, default main: one
# roomcast_publish call per message) and this tree (the publishes to a
# room taken in one bridge turn in one call) take turns at every rate in
# every run, with the same bench client. Also reported: the messages per
# FCALL (the batch size seen; the few other calls of the window, such as
# heartbeats, count too), the publish-to-delivery latency, deliveries lost
# or out of order.
#
#   perf/redis-batch.sh                                  # 3 runs, 10 s windows (about 5 min)
#   RUNS=1 DURATION=3s RATES="2000 50000" perf/redis-batch.sh
#
# Everything is on 127.0.0.1, each run is bounded, and only the processes
# this script started are stopped, by PID. Raw results go to
# perf/results/redis-batch-<timestamp>.jsonl; a table is printed.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
set +e
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
RATES=${RATES:-"20000 100000"}
ROOMS=${ROOMS:-4}
PUBLISHERS=${PUBLISHERS:-4}
SUBSCRIBERS=${SUBSCRIBERS:-8}
BASELINE=${BASELINE:-main}
OUT="$PERF_DIR/results/redis-batch-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
mkdir -p "$PERF_DIR/results"

# The baseline's binary, built from its tree in a target dir of its own.
BASE_TARGET="$CARGO_TARGET_DIR-baseline"
mkdir -p "$WORK/baseline"
git -C "$REPO_DIR" archive "$BASELINE" | tar -x -C "$WORK/baseline"
(cd "$WORK/baseline" && CARGO_TARGET_DIR="$BASE_TARGET" cargo build --release --quiet) || exit 1
BASE_BIN="$BASE_TARGET/release/roomcast"
build_release || exit 1

redis_cpu_seconds() { # Redis' own CPU time, to the microsecond (getrusage, from INFO)
    redis-cli -p "$REDIS_PORT" INFO cpu | tr -d '\r' |
        awk -F: '/^used_cpu_(user|sys):/ { s += $2 } END { printf "%.6f\n", s }'
}
fcalls() {
    redis-cli -p "$REDIS_PORT" INFO commandstats | tr -d '\r' |
        sed -n 's/^cmdstat_fcall:calls=\([0-9]*\),.*/\1/p' | grep . || echo 0
}
seqs() { # the sum of every room's seq: the messages sequenced so far
    redis-cli -p "$REDIS_PORT" --scan --pattern 'roomcast:{*}:seq' |
        while read -r key; do redis-cli -p "$REDIS_PORT" GET "$key"; done |
        awk '{ s += $1 } END { print s + 0 }'
}

run_one() { # LABEL BINARY RATE RUN
    local label=$1 bin=$2 rate=$3 run=$4 port; port=$(free_port)
    start_redis
    "$bin" serve --bind "127.0.0.1:$port" --jwt-secret "$SECRET" --log-level warn \
        --rate-limit 0 --redis "$REDIS_URL" --shards 2 >"$WORK/server.out" 2>>"$WORK/server.err" &
    SERVER_PID=$!
    for _ in $(seq 200); do
        sleep 0.05
        [ "$(http_status "$port" /healthz)" = 200 ] && break
    done
    local idle_start; idle_start=$(redis_cpu_seconds)
    sleep 2
    local idle; idle=$(awk -v a="$idle_start" -v b="$(redis_cpu_seconds)" 'BEGIN { printf "%.6f", (b - a) / 2 }')
    : >"$WORK/bench.err"
    timeout 300 "$BIN" bench fanout --addr "127.0.0.1:$port" --jwt-secret "$SECRET" \
        -c "$SUBSCRIBERS" --rooms "$ROOMS" --publishers "$PUBLISHERS" -s 64 --rate "$rate" \
        -d "$DURATION" --json >"$WORK/bench.json" 2>>"$WORK/bench.err" &
    local bench=$!
    wait_measuring "$WORK/bench.err" "$bench"
    local cpu0 seq0 calls0 cpu1 seq1 calls1
    cpu0=$(redis_cpu_seconds); seq0=$(seqs); calls0=$(fcalls)
    sleep "${DURATION%s}"
    cpu1=$(redis_cpu_seconds); seq1=$(seqs); calls1=$(fcalls)
    wait "$bench"
    [ -s "$WORK/bench.json" ] || { echo "redis-batch: $label $rate run $run failed:" >&2; tail -3 "$WORK/bench.err" "$WORK/server.err" >&2; }
    python3 - "$label" "$rate" "$run" "$WORK/bench.json" "$idle" "${DURATION%s}" \
        "$cpu0" "$cpu1" "$seq0" "$seq1" "$calls0" "$calls1" >>"$OUT" <<'PY'
import json, sys
label, rate, run, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
idle, window = float(sys.argv[5]), float(sys.argv[6])
cpu0, cpu1, seq0, seq1, calls0, calls1 = map(float, sys.argv[7:13])
line = open(path).read().strip()
r = json.loads(line) if line else {}
messages = seq1 - seq0
r.update(label=label, rate=rate, run=run, sequenced=messages, fcalls=calls1 - calls0,
         redis_cpu_s=cpu1 - cpu0, redis_idle_cpu_per_second=idle)
r["redis_cpu_us_per_message"] = ((cpu1 - cpu0) - idle * window) * 1e6 / max(messages, 1)
r["messages_per_fcall"] = messages / max(calls1 - calls0, 1)
print(json.dumps(r))
PY
    stop_server
    stop_redis
}

for run in $(seq "$RUNS"); do
    for rate in $RATES; do
        for label in before after; do
            echo "redis-batch: run $run, $rate msgs/s, $label" >&2
            if [ "$label" = before ]; then run_one "$label" "$BASE_BIN" "$rate" "$run"
            else run_one "$label" "$BIN" "$rate" "$run"; fi
        done
    done
done

python3 - "$OUT" "$BASELINE" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"raw: {sys.argv[1]} (before: {sys.argv[2]})")
print("| offered msgs/s | build | sequenced per window | Redis CPU µs/message | runs | messages per FCALL | p50 ms | p99 ms | lost | out of order |")
print("|---|---|---|---|---|---|---|---|---|---|")
med = statistics.median
for rate in sorted({r["rate"] for r in rows}):
    for label in ["before", "after"]:
        rs = [r for r in rows if r["rate"] == rate and r["label"] == label]
        if not rs:
            continue
        cpu = [r["redis_cpu_us_per_message"] for r in rs]
        print(f"| {rate:,} | {label} | {med([r['sequenced'] for r in rs]):,.0f} | {med(cpu):.2f} | "
              f"{', '.join(f'{c:.2f}' for c in cpu)} | {med([r['messages_per_fcall'] for r in rs]):.1f} | "
              f"{med([r['latency_us']['p50'] for r in rs]) / 1000:.2f} | {med([r['latency_us']['p99'] for r in rs]) / 1000:.2f} | "
              f"{sum(r.get('lost', 0) for r in rs)} | {sum(r.get('out_of_order', 0) for r in rs)} |")
PY
