#!/usr/bin/env bash
# The section-14 feed options side by side, in one run: the same offered
# load and window for every variant, the variants alternated within each
# pass, a fresh server per run, medians of PASSES passes.
#
#   perf/feed-options.sh                       # 3 passes, 10 s windows
#   PASSES=5 DURATION=20s perf/feed-options.sh
#
# Load (a scaled-down price feed): SUBS (1,000) subscribers spread over
# ROOMS (20) rooms, one room each (`roomcast bench fanout` gives every
# subscriber one room, `index % rooms`), so SUBS / ROOMS (50) members per room;
# one publisher at RATE (1,000) messages/s in total, the rooms in turn
# (RATE / ROOMS, 50, per room), ~1 KiB JSON price objects of which one or two
# fields change per update (`--payload prices -s 1024`).
#
# Variants (what the subscribers do; the publisher is the same JSON one):
#   json            plain JSON
#   deflate         offer permessage-deflate (`--compression`)
#   delta           join with data.delta (`--delta`)
#   delta+deflate   both
#   msgpack         the roomcast.msgpack subprotocol (`--protocol msgpack`)
#   msgpack+delta   MessagePack members asking for delta
#   maxrate5        join with data.maxRate 5 (`--max-rate 5`)
#
# Every server has the same flags (`--compression on --shards 1 --echo
# --max-write-buffer 512KiB`) and is pinned to core 0 (SERVER_CORE); the
# bench (`--threads 1`) to core 1 (BENCH_CORE). Read: bytes read off the
# subscribers' sockets per delivery (frames and headers, what the server
# wrote, compressed where deflate is on), server CPU (user + system from
# /proc, over the bench's window) per delivery and per subscriber per
# second. Only the servers this script started are stopped, by PID. Raw
# results: perf/results/feed-options-<timestamp>.jsonl.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PASSES=${PASSES:-3}
SUBS=${SUBS:-1000}
ROOMS=${ROOMS:-20}
RATE=${RATE:-1000}
MAX_RATE=${MAX_RATE:-5}
DURATION=${DURATION:-10s}
VARIANTS=${VARIANTS:-json deflate delta delta+deflate msgpack msgpack+delta maxrate5}
OUT="$PERF_DIR/results/feed-options-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
mkdir -p "$PERF_DIR/results"

variant_args() { # VARIANT: the bench flags of its subscribers
    case $1 in
        json) ;;
        deflate) echo --compression ;;
        delta) echo --delta ;;
        delta+deflate) echo --delta --compression ;;
        msgpack) echo --protocol msgpack ;;
        msgpack+delta) echo --protocol msgpack --delta ;;
        maxrate5) echo --max-rate "$MAX_RATE" ;;
        *) return 1 ;;
    esac
}

run_one() { # VARIANT
    local variant=$1 extra
    read -r -a extra <<<"$(variant_args "$variant")"
    start_server --compression on --shards 1 --echo --max-write-buffer 512KiB
    taskset -p -c "${SERVER_CORE:-0}" "$SERVER_PID" >/dev/null
    local result
    result=$(taskset -c "${BENCH_CORE:-1}" "$BIN" bench fanout -c "$SUBS" --rooms "$ROOMS" --publishers 1 \
        --payload prices -s 1024 --rate "$RATE" -d "$DURATION" --threads 1 "${extra[@]}" \
        --addr "127.0.0.1:$SERVER_PORT" --jwt-secret "$SECRET" --server-pid "$SERVER_PID" --json \
        2>"$WORK/bench.err") || { echo "feed-options: $variant failed" >&2; cat "$WORK/bench.err" >&2; }
    stop_server
    [ -n "$result" ] && echo "${result%\}},\"variant\":\"$variant\"}" >>"$OUT"
    return 0
}

[ -x "$BIN" ] || build_release
echo "# feed-options: $SUBS subscribers over $ROOMS rooms, $RATE msg/s of ~1 KiB prices, $DURATION, $PASSES passes"
echo "# $(date -u +%FT%TZ)  $(nproc) cores  load: $(cut -d' ' -f1-3 /proc/loadavg)  $(git -C "$REPO_DIR" rev-parse --short HEAD)"
for pass in $(seq "$PASSES"); do
    for variant in $VARIANTS; do
        run_one "$variant"
    done
    echo "  pass $pass done $(date -u +%T)"
done
python3 - "$OUT" "$SUBS" "$VARIANTS" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
subs = int(sys.argv[2])
print(f"raw: {sys.argv[1]}")
def med(runs, f):
    return statistics.median(f(r) for r in runs)
stats = {}
for v in sys.argv[3].split():
    runs = [r for r in rows if r["variant"] == v]
    if not runs:
        continue
    d = lambda r: max(r["delivered"], 1)
    stats[v] = dict(
        n=len(runs),
        sent=med(runs, lambda r: r["sent"] / r["duration_seconds"]),
        dps=med(runs, lambda r: r["delivered"] / r["duration_seconds"]),
        lost=None if any(r.get("lost") is None for r in runs) else med(runs, lambda r: r["lost"]),
        bpd=med(runs, lambda r: r["bytes_read"] / d(r)),
        cpd=med(runs, lambda r: r["server"]["cpu_seconds"] / d(r) * 1e6),
        cps=med(runs, lambda r: r["server"]["cpu_seconds"] / subs / r["duration_seconds"] * 1e6),
        p50=med(runs, lambda r: (r.get("latency_us") or {}).get("p50") or 0),
    )
base = stats.get("json")
print("| variant | runs | sent/s | deliveries/s | lost | bytes per delivery | × json | server CPU µs per delivery | × json | CPU µs per subscriber per s | × json |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for v, s in stats.items():
    lost = "–" if s["lost"] is None else f"{s['lost']:,.0f}"
    r = lambda k: f"{s[k] / base[k]:.2f}" if base and base[k] else "-"
    print(f"| {v} | {s['n']} | {s['sent']:,.0f} | {s['dps']:,.0f} | {lost} | {s['bpd']:,.0f} | {r('bpd')} "
          f"| {s['cpd']:.3f} | {r('cpd')} | {s['cps']:.2f} | {r('cps')} |")
PY
