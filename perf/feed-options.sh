#!/usr/bin/env bash
# The section-14 feed options side by side, in one run: the same offered
# load and window for every variant, the variants alternated within each
# pass, a fresh server per run, medians of PASSES passes.
#
#   perf/feed-options.sh                       # 3 passes, 10 s windows
#   PASSES=5 DURATION=20s perf/feed-options.sh
#   PERF_STAT=1 VARIANTS="json delta msgpack msgpack+delta" PASSES=5 perf/feed-options.sh
#
# With PERF_STAT set, each run also counts the server with `perf stat -p`
# (PERF_EVENTS: task-clock, context-switches, cycles, instructions) over
# exactly the bench's measured window, and a second table gives them per
# delivery: task-clock in ns, not /proc's 10 ms ticks, and instructions,
# which do not vary with the machine's load (where the machine counts
# them: on a VM without a PMU cycles and instructions are `n/a`).
# With CALLGRIND set instead, the server runs under valgrind's callgrind,
# which counts its user-space instructions over the same window, exactly
# (the kernel's part, the writes, is not counted; valgrind makes user
# space some 50x slower, so use a lower RATE, e.g. 100):
#   CALLGRIND=1 RATE=100 VARIANTS="json delta msgpack msgpack+delta" PASSES=1 perf/feed-options.sh
# (CALLGRIND_KEEP=DIR keeps each run's profile there, for callgrind_annotate).
#
# Load: the price feed of the requirement in its shape, at a twentieth of
# its rate. SUBS (1,000) subscribers, each in ROOMS_PER_SUB (20) of ROOMS
# (200) rooms (`--rooms-per-sub`: subscriber i takes rooms 20i to 20i + 19,
# modulo 200), so SUBS x ROOMS_PER_SUB / ROOMS (100) members per room; one
# publisher at RATE (500) messages/s in total, the rooms in turn (RATE /
# ROOMS, 2.5, per room), ~1 KiB JSON price objects of which one or two
# fields change per update (`--payload prices -s 1024`).
#
# Why RATE is 500 and not the requirement's 10,000 (50 per symbol): the
# machine has two cores, the server on one and the bench on the other, and
# the bench's one core does not keep up beyond that with every variant.
# Measured (5 s runs of this shape): at RATE 1,000 the MessagePack
# subscribers saturated it (median latency 34 ms against 0.5 ms for JSON,
# the bench thread 81% busy by its own count, and the server then batching
# writes, so its CPU per delivery is no longer comparable), at 700 the
# median was 2.4 ms, at 500 1.0 ms (JSON 0.4 ms, deflate+delta 0.9 ms). The
# server's core could not carry the full rate either: 1,000,000
# deliveries/s at 2-3 us each is two to three cores. MAX_RATE is scaled by
# the same factor (0.25 for the requirement's 5, with 2.5 events/s per room
# for its 50), so that a paced member gets the same share of its rooms'
# events, 1 in 10.
#
# Variants (what the subscribers do; the publisher is the same JSON one):
#   json            plain JSON
#   deflate         offer permessage-deflate (`--compression`)
#   delta           join with data.delta (`--delta`)
#   delta+deflate   both
#   msgpack         the roomcast.msgpack subprotocol (`--protocol msgpack`)
#   msgpack+delta   MessagePack members asking for delta
#   maxrate5        join with data.maxRate MAX_RATE (`--max-rate`): 5
#                   scaled to RATE, as above
#
# The variants run in turn, each pass starting one later than the pass
# before. Every server has the same flags (`--compression on --shards 1 --echo
# --max-write-buffer 512KiB`) and is pinned to core 0 (SERVER_CORE); the
# bench (`--threads 1`) to core 1 (BENCH_CORE). Read: bytes read off the
# subscribers' sockets per delivery (frames and headers, what the server
# wrote, compressed where deflate is on), server CPU (user + system from
# /proc, over the bench's window) per delivery, of which in user space (the
# rest is the kernel's: writes, and on loopback the receiving TCP), and per
# member (subscriber and room) per second. Only the servers this script started are stopped, by PID. Raw
# results: perf/results/feed-options-<timestamp>.jsonl.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PASSES=${PASSES:-3}
SUBS=${SUBS:-1000}
ROOMS=${ROOMS:-200}
ROOMS_PER_SUB=${ROOMS_PER_SUB:-20}
RATE=${RATE:-500}
MAX_RATE=${MAX_RATE:-0.25}
DURATION=${DURATION:-10s}
VARIANTS=${VARIANTS:-json deflate delta delta+deflate msgpack msgpack+delta maxrate5}
PERF_EVENTS=${PERF_EVENTS:-task-clock,context-switches,cycles,instructions}
if [ -n "${CALLGRIND:-}" ]; then
    SERVER_WRAPPER=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.out")
fi
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
    : >"$WORK/bench.out"
    : >"$WORK/bench.err"
    taskset -c "${BENCH_CORE:-1}" "$BIN" bench fanout -c "$SUBS" --rooms "$ROOMS" \
        --rooms-per-sub "$ROOMS_PER_SUB" --publishers 1 \
        --payload prices -s 1024 --rate "$RATE" -d "$DURATION" --threads 1 "${extra[@]}" \
        --addr "127.0.0.1:$SERVER_PORT" --jwt-secret "$SECRET" --server-pid "$SERVER_PID" --json \
        >"$WORK/bench.out" 2>"$WORK/bench.err" &
    local bench=$! counted=""
    if [ -n "${PERF_STAT:-}" ]; then
        counted=$(perf_stat_window "$bench")
        counted=${counted:+,\"perf_stat\":$counted}
    elif [ -n "${CALLGRIND:-}" ]; then
        callgrind_window "$bench"
    fi
    wait "$bench" || { echo "feed-options: $variant failed" >&2; cat "$WORK/bench.err" >&2; }
    stop_server
    if [ -n "${CALLGRIND:-}" ]; then
        counted=$(sed -n 's/^totals: *\([0-9]*\).*/,"callgrind":{"user_instructions":\1}/p' "$WORK/callgrind.out")
        # CALLGRIND_KEEP=DIR: the profiles, for callgrind_annotate.
        [ -n "${CALLGRIND_KEEP:-}" ] && cp "$WORK/callgrind.out" "$CALLGRIND_KEEP/callgrind.$variant.$(date +%s)"
    fi
    local result
    result=$(cat "$WORK/bench.out")
    [ -n "$result" ] && echo "${result%\}},\"variant\":\"$variant\"$counted}" >>"$OUT"
    return 0
}

# callgrind_window BENCH_PID: callgrind counts the server's instructions
# only over the bench's measured window (instrumentation on at "measuring for",
# off at "window over"; the server writes the counts when it exits).
callgrind_window() {
    wait_bench_says "$WORK/bench.err" "$1" 'measuring for' || return 0
    callgrind_control -i on "$SERVER_PID" &>/dev/null
    wait_bench_says "$WORK/bench.err" "$1" 'window over' || true
    callgrind_control -i off "$SERVER_PID" &>/dev/null
}

# perf_stat_window BENCH_PID: `perf stat` on the server over the bench's
# measured window (from its "measuring for" line to its "window over"
# line, so the connects, joins and closes are not counted), as a JSON
# object of the counters (null where the machine does not count one).
perf_stat_window() {
    wait_bench_says "$WORK/bench.err" "$1" 'measuring for' || return 0
    perf stat -x, -e "$PERF_EVENTS" -p "$SERVER_PID" -o "$WORK/perf.csv" &
    local perf=$!
    wait_bench_says "$WORK/bench.err" "$1" 'window over' || true
    kill -INT "$perf"
    wait "$perf" || true
    python3 - "$WORK/perf.csv" <<'PY'
import json, sys
counts = {}
for line in open(sys.argv[1]):
    fields = line.strip().split(",")
    if len(fields) < 3 or line.startswith("#"):
        continue
    value, event = fields[0], fields[2].split(":")[0]
    try:
        counts[event.replace("-", "_")] = float(value)
    except ValueError:
        counts[event.replace("-", "_")] = None  # <not supported>, <not counted>
print(json.dumps(counts))
PY
}

[ -x "$BIN" ] || build_release
echo "# feed-options: $SUBS subscribers in $ROOMS_PER_SUB of $ROOMS rooms each, $RATE msg/s of ~1 KiB prices, maxRate $MAX_RATE, $DURATION, $PASSES passes"
echo "# $(date -u +%FT%TZ)  $(nproc) cores  load: $(cut -d' ' -f1-3 /proc/loadavg)  $(git -C "$REPO_DIR" rev-parse --short HEAD)"
read -r -a variants <<<"$VARIANTS"
for pass in $(seq "$PASSES"); do
    # Each pass starts one variant later, so that no variant always runs
    # first (or after the same one) while the machine's load drifts.
    for i in "${!variants[@]}"; do
        run_one "${variants[$(((i + pass - 1) % ${#variants[@]}))]}"
    done
    echo "  pass $pass done $(date -u +%T)"
done
python3 - "$OUT" "$((SUBS * ROOMS_PER_SUB))" "$VARIANTS" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
members = int(sys.argv[2])
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
        upd=med(runs, lambda r: r["server"]["user_cpu_seconds"] / d(r) * 1e6),
        cps=med(runs, lambda r: r["server"]["cpu_seconds"] / members / r["duration_seconds"] * 1e6),
        p50=med(runs, lambda r: (r.get("latency_us") or {}).get("p50") or 0),
    )
base = stats.get("json")
print("| variant | runs | sent/s | deliveries/s | lost | bytes per delivery | × json | server CPU µs per delivery | × json | of which user space | × json | CPU µs per member per s | × json | p50 latency µs |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for v, s in stats.items():
    lost = "–" if s["lost"] is None else f"{s['lost']:,.0f}"
    r = lambda k: f"{s[k] / base[k]:.2f}" if base and base[k] else "-"
    print(f"| {v} | {s['n']} | {s['sent']:,.0f} | {s['dps']:,.0f} | {lost} | {s['bpd']:,.0f} | {r('bpd')} "
          f"| {s['cpd']:.3f} | {r('cpd')} | {s['upd']:.3f} | {r('upd')} | {s['cps']:.3f} | {r('cps')} | {s['p50']:,.0f} |")
# PERF_STAT: the server's counters over each window, per delivery.
# CALLGRIND: the server's user-space instructions over each window.
for r in rows:
    r["counted"] = {**r.get("perf_stat", {}), **r.get("callgrind", {})}
counted = {v: [r for r in rows if r["variant"] == v and r["counted"]] for v in stats}
if any(counted.values()):
    def per_delivery(r, event, scale):
        value = r["counted"].get(event)
        return None if value is None else value * scale / max(r["delivered"], 1)
    columns = [("task_clock", 1e3, "task-clock µs", 3),  # perf reports msec
               ("context_switches", 1.0, "context switches", 3),
               ("cycles", 1.0, "cycles", 0), ("instructions", 1.0, "instructions", 0),
               ("user_instructions", 1.0, "user-space instructions (callgrind)", 0)]
    columns = [c for c in columns if any(c[0] in r["counted"] for r in rows)]
    medians = {}
    for v, runs in counted.items():
        for event, scale, _, _ in columns:
            values = [per_delivery(r, event, scale) for r in runs]
            medians[v, event] = None if not runs or None in values else statistics.median(values)
    print()
    print("The server's counters over the window, per delivery (medians):")
    print("| variant | runs | " + " | ".join(f"{name} | × json" for _, _, name, _ in columns) + " |")
    print("|---|---|" + "---|---|" * len(columns))
    for v, runs in counted.items():
        cells = []
        for event, _, _, digits in columns:
            m, b = medians[v, event], medians.get(("json", event))
            cells.append("n/a" if m is None else f"{m:,.{digits}f}")
            cells.append(f"{m / b:.2f}" if m is not None and b else "-")
        print(f"| {v} | {len(runs)} | " + " | ".join(cells) + " |")
    first = columns[0]
    for v, runs in counted.items():
        each = ", ".join(f"{per_delivery(r, first[0], first[1]):,.{first[3]}f}" for r in runs)
        print(f"  {v}: {first[2]} per delivery, runs in order: {each}")
PY
