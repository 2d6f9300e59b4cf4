#!/usr/bin/env bash
# What the `roomcast.msgpack` subprotocol (section 14) costs or saves the
# server against JSON: the same offered load (one publisher at RATE
# messages/s to one room of CONNS subscribers, a SIZE-byte JSON price
# update as `data`) with every client speaking JSON against every client
# speaking MessagePack (`roomcast bench --protocol msgpack`), alternated
# run by run, each on a fresh server.
#
#   perf/msgpack.sh                           # 3 runs of each, 10 s windows
#   RUNS=1 DURATION=5s perf/msgpack.sh
#
# The server (`--shards 1`) is pinned to core 0 (SERVER_CORE), the bench
# (`--threads 1`) to core 1 (BENCH_CORE). Read server CPU per delivery
# (user + system, from /proc, over the bench's window) and the bytes the
# subscribers read per delivery. Only the servers this script started are
# stopped, by PID. Raw results go to perf/results/msgpack-<timestamp>.jsonl,
# one bench JSON object per line with `"mode"` added.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RUNS=${RUNS:-3}
CONNS=${CONNS:-1000}
RATE=${RATE:-200}
SIZE=${SIZE:-512}
DURATION=${DURATION:-10s}
OUT="$PERF_DIR/results/msgpack-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
mkdir -p "$PERF_DIR/results"

[ -x "$BIN" ] || build_release
for _ in $(seq "$RUNS"); do
    fanout_ab_run msgpack json "$OUT" --payload prices -s "$SIZE" --protocol json
    fanout_ab_run msgpack msgpack "$OUT" --payload prices -s "$SIZE" --protocol msgpack
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"raw: {sys.argv[1]}")
print("| protocol | runs | deliveries/s | lost | server CPU µs per delivery | bytes read per delivery | p50 latency µs |")
print("|---|---|---|---|---|---|---|")
for protocol in ("json", "msgpack"):
    runs = [r for r in rows if r["protocol"] == protocol]
    def med(f):
        return statistics.median(f(r) for r in runs)
    print(f"| {protocol} | {len(runs)} | {med(lambda r: r['delivered'] / r['duration_seconds']):,.0f} "
          f"| {sum((r['lost'] or 0) for r in runs)} "
          f"| {med(lambda r: r['server']['cpu_seconds'] / max(r['delivered'], 1) * 1e6):.3f} "
          f"| {med(lambda r: r['bytes_per_delivery']):.1f} "
          f"| {med(lambda r: r['latency_us']['p50']):,.0f} |")
PY
