#!/usr/bin/env bash
# What `room:join` `data.delta` saves on the wire and costs the server: the
# same offered load (one publisher at RATE messages/s to one room of CONNS
# subscribers, 1 KiB JSON price updates whose book stays the same and whose
# record changes) with plain subscribers against delta subscribers
# (`roomcast bench fanout --delta`), alternated run by run, each on a fresh
# server.
#
#   perf/delta.sh                          # 3 runs of each, 10 s windows
#   RUNS=1 DURATION=5s perf/delta.sh
#
# The server (`--shards 1`) is pinned to core 0 (SERVER_CORE), the bench
# (`--threads 1`) to core 1 (BENCH_CORE). Bytes read per delivery (frames
# and headers, as the bench reads them off its sockets) and server CPU
# (user + system, from /proc) per delivery are what to read. Only the
# servers this script started are stopped, by PID. Raw results go to
# perf/results/delta-<timestamp>.jsonl, one bench JSON object per line with
# `"mode"` added.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RUNS=${RUNS:-3}
CONNS=${CONNS:-1000}
RATE=${RATE:-200}
DURATION=${DURATION:-10s}
OUT="$PERF_DIR/results/delta-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
mkdir -p "$PERF_DIR/results"

[ -x "$BIN" ] || build_release
for _ in $(seq "$RUNS"); do
    fanout_ab_run delta plain "$OUT" --payload prices -s 1024
    fanout_ab_run delta delta "$OUT" --payload prices -s 1024 --delta
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"raw: {sys.argv[1]}")
print("| subscribers | sent/s | deliveries/s | lost | bytes read per delivery | server CPU s | CPU µs per delivery |")
print("|---|---|---|---|---|---|---|")
for mode in ("plain", "delta"):
    runs = [r for r in rows if r["mode"] == mode]
    def med(f):
        return statistics.median(f(r) for r in runs)
    print(f"| {mode} | {med(lambda r: r['sent'] / r['duration_seconds']):,.0f} "
          f"| {med(lambda r: r['delivered'] / r['duration_seconds']):,.0f} "
          f"| {med(lambda r: r.get('lost') or 0):,.0f} "
          f"| {med(lambda r: r['bytes_read'] / max(r['delivered'], 1)):,.0f} "
          f"| {med(lambda r: r['server']['cpu_seconds']):.3f} "
          f"| {med(lambda r: r['server']['cpu_seconds'] / max(r['delivered'], 1) * 1e6):.3f} |")
PY
