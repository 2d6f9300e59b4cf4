#!/usr/bin/env bash
# 100,000 authenticated connections on one machine: `roomcast serve
# --processes 6` on one port, joined through one redis-server, every
# connection a member of one room, driven by `roomcast bench fanout` (its
# worker processes, over four loopback source addresses). One message a
# second is published into the room, so each one is a fan-out to 100,000
# members: its latency percentiles up to `max` are the time until the last
# delivery.
#
#   perf/cluster-100k.sh                    # 10 s window
#   CONNS=50000 PROCESSES=4 perf/cluster-100k.sh
#
# Prints the bench's JSON line (connect rate, RSS per connection summed over
# the nodes, latency) and Redis' memory; raw output goes to
# perf/results/cluster-100k-<timestamp>.json. Everything is on loopback,
# bounded in time, and only the processes started here are stopped, by PID.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
set +e
CONNS=${CONNS:-100000}
PROCESSES=${PROCESSES:-6}
DURATION=${DURATION:-10s}
OUT="$PERF_DIR/results/cluster-100k-$(date -u +%Y%m%dT%H%M%SZ).json"
mkdir -p "$PERF_DIR/results"

build_release
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
REDIS_PID=$!
trap 'stop_server; kill $REDIS_PID 2>/dev/null; wait $REDIS_PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
redis_rss() { redis-cli -p "$REDIS_PORT" INFO memory | tr -d '\r' | sed -n 's/^used_memory_rss://p'; }
redis_before=$(redis_rss)

PORT=$(free_port)
per_process=$(( CONNS / PROCESSES * 11 / 10 + 100 ))
[ "$per_process" -gt 19000 ] && per_process=19000
"$BIN" serve --bind "127.0.0.1:$PORT" --jwt-secret "$SECRET" --log-level warn --rate-limit 0 \
    --redis "redis://127.0.0.1:$REDIS_PORT" --processes "$PROCESSES" --shards 1 \
    --max-connections "$per_process" >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
pids=$(node_pids "$SERVER_PID" "$PROCESSES" | tr ' ' ',')
sleep 1

timeout 600 "$BIN" bench fanout --addr "127.0.0.1:$PORT" --jwt-secret "$SECRET" \
    -c "$CONNS" --rooms 1 --publishers 1 -s 64 --rate 1 -d "$DURATION" \
    --src-ips 127.0.1.1,127.0.1.2,127.0.1.3,127.0.1.4 \
    --json --server-pid "$pids" >"$WORK/bench.json" 2>"$WORK/bench.err" &
BENCH=$!
# Redis' memory while every connection is in: once the bench measures.
wait_measuring "$WORK/bench.err" "$BENCH"
redis_after=$(redis_rss)
wait "$BENCH"
if [ ! -s "$WORK/bench.json" ]; then
    echo "cluster-100k: the bench failed:" >&2
    tail -5 "$WORK/bench.err" "$WORK/server.err" >&2
    exit 1
fi
python3 - "$WORK/bench.json" "$redis_before" "$redis_after" "$PROCESSES" <<'PY' | tee "$OUT"
import json, sys
r = json.load(open(sys.argv[1]))
before, after, processes = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
r["processes"] = processes
r["redis_rss_bytes"] = after
r["redis_rss_per_connection_bytes"] = (after - before) / max(r["connected"], 1)
print(json.dumps(r))
PY
