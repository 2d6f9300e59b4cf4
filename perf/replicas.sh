#!/usr/bin/env bash
# What `--redis-replicas 1` costs a publish: POST /publish latency (p50,
# p99) and Redis CPU per publish, with no replica (`--redis-replicas 0`)
# against one real replica (`redis-server --replicaof`) that every publish
# waits for (`WAIT 1 1000`), side by side, alternated run by run.
#
#   perf/replicas.sh                      # 5 runs, 10,000 requests each
#   RUNS=1 REQUESTS=2000 perf/replicas.sh
#
# Each run: a fresh master (and replica), one node (`--shards 1`,
# `--publish-rate 0`), then perf/publish_http.py with 1 connection (one
# publish at a time: one WAIT per publish) and with 16 (publishes overlap:
# one WAIT covers every publish the node flushed before it). Redis CPU is
# the master's (and the replica's) user + system time from INFO cpu over
# the requests, less its idle rate, per publish. Everything is on
# 127.0.0.1; only the processes this script started are stopped, by PID.
# Raw results go to perf/results/replicas-<timestamp>.jsonl.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
set +e
RUNS=${RUNS:-5}
REQUESTS=${REQUESTS:-10000}
OUT="$PERF_DIR/results/replicas-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
mkdir -p "$PERF_DIR/results"
REPLICA_PID=""
REPLICA_PORT=""

waits_of() { # PORT: WAIT commands run so far
    redis-cli -p "$1" INFO commandstats | tr -d '\r' |
        sed -n 's/^cmdstat_wait:calls=\([0-9]*\).*/\1/p' | grep . || echo 0
}

cpu_of() { # PORT: Redis' own CPU seconds
    redis-cli -p "$1" INFO cpu | tr -d '\r' |
        awk -F: '/^used_cpu_(user|sys):/ { s += $2 } END { printf "%.6f\n", s }'
}

start_replica() {
    REPLICA_PORT=$(free_port)
    redis-server --port "$REPLICA_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --replicaof 127.0.0.1 "$REDIS_PORT" >/dev/null 2>&1 &
    REPLICA_PID=$!
    for _ in $(seq 200); do
        redis-cli -p "$REPLICA_PORT" INFO replication 2>/dev/null | grep -q 'master_link_status:up' && return 0
        sleep 0.05
    done
    echo "replicas: the replica did not sync" >&2
}

stop_replica() {
    [ -n "$REPLICA_PID" ] || return 0
    kill "$REPLICA_PID" 2>/dev/null; wait "$REPLICA_PID" 2>/dev/null
    REPLICA_PID=""
}

run_one() { # REPLICAS RUN
    local replicas=$1 run=$2
    start_redis
    [ "$replicas" -gt 0 ] && start_replica
    start_server --redis "$REDIS_URL" --redis-replicas "$replicas" --shards 1 --publish-rate 0
    for _ in $(seq 100); do
        [ "$(http_status "$SERVER_PORT" /healthz)" = 200 ] && break
        sleep 0.05
    done
    local token; token=$("$BIN" token --secret "$SECRET" --sub feed --pub 'bench-*' --ttl 3600)
    # Redis' idle CPU (timers, the node's heartbeats, replication pings).
    local idle0 ridle0; idle0=$(cpu_of "$REDIS_PORT"); ridle0=$([ -n "$REPLICA_PID" ] && cpu_of "$REPLICA_PORT" || echo 0)
    sleep 2
    local idle1 ridle1; idle1=$(cpu_of "$REDIS_PORT"); ridle1=$([ -n "$REPLICA_PID" ] && cpu_of "$REPLICA_PORT" || echo 0)
    for connections in 1 16; do
        local before rbefore after rafter t0 t1 waits0 waits1
        waits0=$(waits_of "$REDIS_PORT")
        before=$(cpu_of "$REDIS_PORT"); rbefore=$([ -n "$REPLICA_PID" ] && cpu_of "$REPLICA_PORT" || echo 0)
        t0=$(date +%s.%N)
        timeout 300 python3 "$PERF_DIR/publish_http.py" --port "$SERVER_PORT" --token "$token" \
            --requests "$REQUESTS" --connections "$connections" --server-pid "$SERVER_PID" --json \
            >"$WORK/publish.json" 2>>"$WORK/publish.err"
        t1=$(date +%s.%N)
        waits1=$(waits_of "$REDIS_PORT")
        after=$(cpu_of "$REDIS_PORT"); rafter=$([ -n "$REPLICA_PID" ] && cpu_of "$REPLICA_PORT" || echo 0)
        [ -s "$WORK/publish.json" ] || { echo "replicas: run $run failed:" >&2; tail -3 "$WORK/publish.err" "$WORK/server.err" >&2; continue; }
        python3 - "$replicas" "$run" "$WORK/publish.json" "$REQUESTS" \
            "$idle0" "$idle1" "$before" "$after" "$ridle0" "$ridle1" "$rbefore" "$rafter" "$t0" "$t1" "$waits0" "$waits1" >>"$OUT" <<'PY'
import json, sys
replicas, run, path, requests = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
idle0, idle1, before, after, ridle0, ridle1, rbefore, rafter, t0, t1 = map(float, sys.argv[5:15])
r = json.loads(open(path).read())
window = t1 - t0
busy = lambda a, b, i0, i1: ((b - a) - (i1 - i0) / 2 * window) * 1e6 / requests
r.update(replicas=replicas, run=run,
         publishes_per_wait=requests / max(int(sys.argv[16]) - int(sys.argv[15]), 1) if replicas else None,
         redis_cpu_us_per_publish=busy(before, after, idle0, idle1),
         replica_cpu_us_per_publish=busy(rbefore, rafter, ridle0, ridle1) if replicas else None)
print(json.dumps(r))
PY
    done
    stop_server
    stop_replica
    stop_redis
}

build_release
for run in $(seq "$RUNS"); do
    for replicas in 0 1; do
        echo "replicas: run $run, --redis-replicas $replicas" >&2
        run_one "$replicas" "$run"
    done
done

python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"raw: {sys.argv[1]}")
print("| --redis-replicas | connections | publishes/s | p50 ms | p99 ms | master CPU µs/publish | replica CPU µs/publish | node CPU µs/publish | publishes per WAIT |")
print("|---|---|---|---|---|---|---|---|---|")
med = lambda xs: statistics.median(xs) if xs else float("nan")
for replicas in (0, 1):
    for connections in (1, 16):
        rs = [r for r in rows if r["replicas"] == replicas and r["connections"] == connections]
        if not rs:
            continue
        replica = "-" if not replicas else f"{med([r['replica_cpu_us_per_publish'] for r in rs]):.1f}"
        per_wait = "-" if not replicas else f"{med([r['publishes_per_wait'] for r in rs]):.2f}"
        print(f"| {replicas} | {connections} | {med([r['requests_per_s'] for r in rs]):,.0f} | "
              f"{med([r['p50_ms'] for r in rs]):.3f} | {med([r['p99_ms'] for r in rs]):.3f} | "
              f"{med([r['redis_cpu_us_per_publish'] for r in rs]):.1f} | {replica} | "
              f"{med([r['server_cpu_us_per_request'] for r in rs]):.1f} | {per_wait} |")
PY
