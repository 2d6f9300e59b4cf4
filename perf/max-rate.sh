#!/usr/bin/env bash
# What `room:join` `data.maxRate` costs or saves the server: the same
# offered load (one publisher at RATE messages/s to one room of CONNS
# subscribers, 64 B) with plain subscribers against subscribers at
# `maxRate` MAX_RATE, alternated run by run, each on a fresh server.
#
#   perf/max-rate.sh                          # 3 runs of each, 10 s windows
#   RUNS=1 DURATION=5s perf/max-rate.sh
#
# The server (`--shards 1`) is pinned to core 0 (SERVER_CORE), the bench
# (`--threads 1`) to core 1 (BENCH_CORE). Server CPU (user + system, from
# /proc) over the bench's window, per subscriber and second, is what to
# read; deliveries/s show how much less the paced members are sent. Only
# the servers this script started are stopped, by PID. Raw results go to
# perf/results/max-rate-<timestamp>.jsonl, one bench JSON object per line
# with `"mode"` added.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RUNS=${RUNS:-3}
CONNS=${CONNS:-1000}
RATE=${RATE:-200}
MAX_RATE=${MAX_RATE:-5}
DURATION=${DURATION:-10s}
OUT="$PERF_DIR/results/max-rate-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
mkdir -p "$PERF_DIR/results"

[ -x "$BIN" ] || build_release
for _ in $(seq "$RUNS"); do
    fanout_ab_run max-rate plain "$OUT" -s 64
    fanout_ab_run max-rate paced "$OUT" -s 64 --max-rate "$MAX_RATE"
done
python3 - "$OUT" "$CONNS" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
conns = int(sys.argv[2])
print(f"raw: {sys.argv[1]}")
print("| subscribers | sent/s | deliveries/s | server CPU s | CPU µs per subscriber per s | CPU µs per delivery |")
print("|---|---|---|---|---|---|")
for mode in ("plain", "paced"):
    runs = [r for r in rows if r["mode"] == mode]
    def med(f):
        return statistics.median(f(r) for r in runs)
    cpu = med(lambda r: r["server"]["cpu_seconds"])
    secs = med(lambda r: r["duration_seconds"])
    print(f"| {mode} | {med(lambda r: r['sent'] / r['duration_seconds']):,.0f} "
          f"| {med(lambda r: r['delivered'] / r['duration_seconds']):,.0f} | {cpu:.3f} "
          f"| {med(lambda r: r['server']['cpu_seconds'] / conns / r['duration_seconds'] * 1e6):.2f} "
          f"| {med(lambda r: r['server']['cpu_seconds'] / max(r['delivered'], 1) * 1e6):.3f} |")
PY
