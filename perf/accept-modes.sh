#!/usr/bin/env bash
# Compares the two accept modes (--accept handoff | reuseport) in ONE run:
# builds release, then alternates the modes REPS times each, a fresh server
# (--shards 2) per run, each run opening CONNS idle /ws connections with
# perf/connect_idle.py. Done at two handshake concurrencies: IN_FLIGHT_LOW
# (below the 128-entry accept backlog of the handoff listener) and
# IN_FLIGHT_HIGH (above it). Prints per mode the median (min-max) of server
# CPU us per handshake, handshakes/s and RSS per idle connection, the ratio
# reuseport/handoff of the medians, and how connections and CPU were spread
# over the shards.
#
#   perf/accept-modes.sh            # CONNS=5000 REPS=3 IN_FLIGHT="64 256"
#   CONNS=5000 REPS=5 IN_FLIGHT="256" perf/accept-modes.sh
#
# Raw results (one JSON line per run) are kept in perf/results/ if
# KEEP=1 (default 0).

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONNS=${CONNS:-5000}
REPS=${REPS:-3}
IN_FLIGHT=${IN_FLIGHT:-"64 256"}
HOLD=${HOLD:-2}
SHARDS=${SHARDS:-2}

build_release
TOKEN=$(mint_token)
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"

echo "# accept modes: $CONNS conns/run, $REPS runs/mode, --shards $SHARDS, in-flight: $IN_FLIGHT"
echo "# $(date -u +%FT%TZ)  $(nproc) cores  load: $(cut -d' ' -f1-3 /proc/loadavg)"
for inflight in $IN_FLIGHT; do
    for rep in $(seq "$REPS"); do
        for mode in handoff reuseport; do
            start_server --shards "$SHARDS" --accept "$mode"
            line=$(python3 "$PERF_DIR/connect_idle.py" --url-port "$SERVER_PORT" --token "$TOKEN" \
                --conns "$CONNS" --server-pid "$SERVER_PID" --in-flight "$inflight" \
                --hold "$HOLD" --json 2>"$WORK/client.err") || {
                echo "run failed ($mode, in-flight $inflight):" >&2
                cat "$WORK/client.err" >&2
            }
            stop_server
            echo "  run $rep $mode in-flight $inflight: $(cat "$WORK/client.err")"
            [ -n "$line" ] && echo "{\"mode\":\"$mode\",\"rep\":$rep,\"result\":$line}" >>"$RESULTS"
        done
    done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "${KEEP:-0}" = 1 ]; then
    mkdir -p "$PERF_DIR/results"
    cp "$RESULTS" "$PERF_DIR/results/accept-modes-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
fi

python3 - "$RESULTS" <<'EOF'
import json, statistics, sys

runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
metrics = [
    ("server CPU us/handshake", "server_cpu_us_per_handshake_ns", "{:.1f}"),
    ("handshakes/s (wall)", "handshakes_per_s", "{:.0f}"),
    ("RSS per idle conn (B)", "rss_per_conn_bytes", "{:.0f}"),
    ("listen overflows", "listen_overflows", "{:.0f}"),
]

def summary(values, fmt):
    med = statistics.median(values)
    return med, f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))})"

for inflight in sorted({r["result"]["in_flight"] for r in runs}):
    print(f"\n## in-flight {inflight}: median (min-max) over runs")
    print(f"| metric | handoff | reuseport | reuseport/handoff |")
    print(f"|---|---|---|---|")
    for label, key, fmt in metrics:
        cells, meds = [], []
        for mode in ("handoff", "reuseport"):
            vals = [r["result"][key] for r in runs
                    if r["mode"] == mode and r["result"]["in_flight"] == inflight
                    and r["result"].get(key) is not None]
            if vals:
                m, text = summary(vals, fmt)
                meds.append(m)
                cells.append(text)
            else:
                meds.append(None)
                cells.append("-")
        ratio = f"{meds[1] / meds[0]:.2f}" if None not in meds and meds[0] else "-"
        print(f"| {label} | {cells[0]} | {cells[1]} | {ratio} |")
    print(f"\nspread over shards (connections per shard from connId; CPU s per thread during connects):")
    for mode in ("handoff", "reuseport"):
        for r in runs:
            if r["mode"] != mode or r["result"]["in_flight"] != inflight:
                continue
            res = r["result"]
            sc = res["shard_conns"]
            counts = [v for k, v in sc.items()]
            skew = (max(counts) / (sum(counts) / len(counts))) if counts else 0
            cpu = ", ".join(f"{k} {v:.3f}" for k, v in res["thread_cpu_s"].items()
                            if k.startswith(("shard", "acceptor")))
            print(f"  {mode:9s} run {r['rep']}: conns {sc} (max/mean {skew:.3f}); cpu {cpu}")
EOF
