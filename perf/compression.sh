#!/usr/bin/env bash
# permessage-deflate (--compression on): what it costs the server and saves
# on the wire, measured side by side in one run.
#
#   1. fan-out: SUBS (1,000) subscribers of one room, one publisher at RATE
#      (40) messages/s of a ~1 KiB JSON price update (`--payload prices -s
#      1024`), DURATION (10s) windows. "off": the clients do not offer the
#      extension; "on": they offer it (`roomcast bench --compression`) and
#      inflate what arrives compressed. Same server flags both ways
#      (`--compression on --shards 1`), a fresh server per run, server on
#      core 0 and `roomcast bench --threads 1` on core 1, off and on
#      alternated REPS (3) times. Reported: server CPU µs per delivery,
#      bytes read off the sockets per delivery, server RSS per connection,
#      and which side was saturated. The rate is one both sides keep up
#      with: the single bench thread also inflates every delivery.
#   2. idle: CONNS (10,000) and SMALL (1,000) idle /ws connections, each
#      joined to one room, with and without the offer; server RSS per
#      connection, and the marginal cost (RSS(CONNS) - RSS(SMALL)) /
#      (CONNS - SMALL), which leaves out what a shard holds once (its
#      deflate and inflate state, about 300 KB, made on first use).
#
#   perf/compression.sh
#   REPS=5 RATE=200 perf/compression.sh
#   BASE_BIN=/path/to/older/roomcast IDLE=0 perf/compression.sh
#       # the fan-out of this build and an earlier one (modes `off-base`,
#       # `on-base`), all four alternated; IDLE=0 skips the idle part

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SUBS=${SUBS:-1000}
RATE=${RATE:-40}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-10000}
SMALL=${SMALL:-1000}
REPS=${REPS:-3}
IDLE=${IDLE:-1}
MODES="off on"
[ -n "${BASE_BIN:-}" ] && MODES="off on off-base on-base"

# BUILD=0 measures the binaries as they are (no build).
[ "${BUILD:-1}" = 1 ] && build_release
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"

# run MODE SCENARIO BENCH-ARGS...: one fresh server, one bench run, one JSON line.
run() {
    local mode="$1" scenario="$2"
    shift 2
    local offer=()
    [ "${mode%-base}" = on ] && offer=(--compression)
    local BENCH_BIN=$BIN
    # start_server runs $BIN: the earlier build for the `-base` modes.
    local BIN=$BIN
    [ "$mode" != "${mode%-base}" ] && BIN=$BASE_BIN
    start_server --compression on --shards 1
    taskset -p -c 0 "$SERVER_PID" >/dev/null
    local line
    line=$(taskset -c 1 "$BENCH_BIN" bench "$scenario" --addr "127.0.0.1:$SERVER_PORT" \
        --jwt-secret "$SECRET" --server-pid "$SERVER_PID" --threads 1 --json \
        "${offer[@]}" "$@" 2>"$WORK/bench.err") || { cat "$WORK/bench.err" >&2; }
    stop_server
    [ -n "$line" ] && echo "{\"mode\":\"$mode\",\"scenario\":\"$scenario\",\"result\":$line}" >>"$RESULTS"
}

echo "# compression: $SUBS subscribers, $RATE msg/s of ~1 KiB prices, $DURATION; idle $CONNS; $REPS runs each"
echo "# $(date -u +%FT%TZ)  $(nproc) cores  load: $(cut -d' ' -f1-3 /proc/loadavg)"
for rep in $(seq "$REPS"); do
    for mode in $MODES; do
        run "$mode" fanout -c "$SUBS" --rooms 1 --publishers 1 --payload prices -s 1024 \
            --rate "$RATE" -d "$DURATION"
        echo "  fanout run $rep $mode done"
    done
done
for rep in $(seq "$REPS"); do
    [ "$IDLE" = 1 ] || break
    for mode in off on; do
        for n in "$CONNS" "$SMALL"; do
            run "$mode" idle -c "$n" -d 3s
        done
        echo "  idle run $rep $mode done"
    done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$RESULTS" "$CONNS" "$SMALL" <<'EOF'
import json, statistics, sys

runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
big, small = int(sys.argv[2]), int(sys.argv[3])

def cells(scenario, mode, get, conns=None):
    vals = [get(r["result"]) for r in runs if r["scenario"] == scenario and r["mode"] == mode
            and (conns is None or r["result"]["connected"] == conns)]
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    med = statistics.median(vals)
    return f"{med:,.3f} ({', '.join(f'{v:,.3f}' for v in vals)})"

print("\n| compression | deliveries/s | server CPU µs/delivery | bytes read/delivery | RSS/connection B | p50 µs | p99 µs | lost | out of order | errors | saturated |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for mode in ("off", "on", "off-base", "on-base"):
    if not any(r["scenario"] == "fanout" and r["mode"] == mode for r in runs):
        continue
    f = lambda key: cells("fanout", mode, key)
    print("| " + " | ".join([
        mode,
        f(lambda r: r["messages_per_second"]),
        f(lambda r: r["server"]["cpu_us_per_message"]),
        f(lambda r: r["bytes_per_delivery"]),
        f(lambda r: r["server"]["rss_per_connection_bytes"]),
        f(lambda r: r["latency_us"]["p50"]),
        f(lambda r: r["latency_us"]["p99"]),
        f(lambda r: r["lost"]),
        f(lambda r: r["out_of_order"]),
        f(lambda r: r["errors"]),
        "; ".join(sorted({r["result"]["saturated"] for r in runs
                          if r["scenario"] == "fanout" and r["mode"] == mode})),
    ]) + " |")
print(f"\n| idle, compression | RSS/connection B at {big:,} | marginal RSS/connection B ({small:,} to {big:,}) |")
print("|---|---|---|")
for mode in ("off", "on"):
    per = cells("idle", mode, lambda r: r["server"]["rss_per_connection_bytes"], big)
    after = lambda n: [r["result"]["server"]["rss_after_bytes"] for r in runs
                       if r["scenario"] == "idle" and r["mode"] == mode and r["result"]["connected"] == n]
    marginal = [(b - s) / (big - small) for b, s in zip(after(big), after(small))]
    m = f"{statistics.median(marginal):,.1f} ({', '.join(f'{v:,.1f}' for v in marginal)})" if marginal else "-"
    print(f"| {mode} | {per} | {m} |")
EOF
rm -rf "$WORK"
