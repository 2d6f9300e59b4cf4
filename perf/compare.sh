#!/usr/bin/env bash
# Side-by-side comparison of roomcast with its benchmark peers (perf/peers).
#
# Builds roomcast (release) and the peers, then for every case and server:
# a FRESH server pinned to one core, `roomcast bench` pinned to the other,
# RUNS runs, the server stopped by PID. Every bench result (one JSON object)
# goes to perf/results/compare-<timestamp>.jsonl; perf/RESULTS.md is then
# written from that file (medians with min-max, ratios, target verdicts).
#
#   perf/compare.sh                         # everything, 3 runs each
#   RUNS=1 perf/compare.sh                  # a quick full table
#   CASES="echo-32 fanout-1k" SERVERS="roomcast node-ws" perf/compare.sh
#   perf/compare.sh --report perf/results/compare-X.jsonl [more.jsonl...]
#                                           # only rewrite RESULTS.md from raw data
#   BASE_BIN=/path/to/older/roomcast SERVERS="roomcast roomcast-base" \
#     RESULTS_MD=/tmp/ab.md perf/compare.sh  # a change against an earlier build
#
# Environment: RUNS (3), DURATION (5s, the measured window of each run),
# CASES, SERVERS (space-separated, default all; `roomcast-base` runs BASE_BIN
# with roomcast's flags; `roomcast-noack` runs roomcast with fan-out
# publishers that send no `id`, so no ack, as the peers; `uws` runs only if UWS_BIN, by default
# $CARGO_TARGET_DIR/uws/peer-uws, exists: built when UWS_DIR and USOCKETS_DIR
# are set), BUILD (1; 0 skips the builds),
# SERVER_CORE (0), BENCH_CORE (1), RESULTS_MD (perf/RESULTS.md),
# ROOMCAST_ARGS (more `serve` flags for roomcast and roomcast-base) and
# BENCH_ARGS (more bench flags): e.g. `--tls-cert C --tls-key K` and
# `--tls` measure roomcast over TLS (SERVERS="roomcast roomcast-base"),
# CARGO_TARGET_DIR (target; the peers build there too).
#
# Everything targets 127.0.0.1, every run is bounded (bench --duration plus a
# hard `timeout`), and only the servers this script started are stopped, by PID.

# Paths, the secret, the work directory and stop_server/cleanup come from lib.sh;
# this script defines its own start_server (pinned, any of the servers).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# A failed run is recorded and the script goes on, so no `set -e` here.
set +e
RUNS=${RUNS:-3}
DURATION=${DURATION:-5s}
SERVER_CORE=${SERVER_CORE:-0}
BENCH_CORE=${BENCH_CORE:-1}
BUILD=${BUILD:-1}
ROOMCAST_ARGS=${ROOMCAST_ARGS:-}
BENCH_ARGS=${BENCH_ARGS:-}
RESULTS_MD=${RESULTS_MD:-$PERF_DIR/RESULTS.md}
ALL_CASES="echo-32 echo-1k fanout-1k fanout-10k fanout-1k-20 fanout-1k-100 fanout-1k-200 fanout-10k-20 fanout-rooms fanout-rooms-w16 idle-10k idle-19k"
ALL_SERVERS="floor roomcast tokio-tungstenite fastwebsockets uws node-ws socketio"
CASES=${CASES:-$ALL_CASES}
SERVERS=${SERVERS:-$ALL_SERVERS}
# Hard bound on one bench run, on top of its own --duration.
BENCH_TIMEOUT=${BENCH_TIMEOUT:-240}
# A server whose RSS grows past this (MiB) is killed and its run marked failed:
# the peers queue without bound when the bench publishes faster than they send.
MAX_SERVER_RSS_MB=${MAX_SERVER_RSS_MB:-4096}


# ---------------------------------------------------------------- report
# The aggregation (python3, stdlib only): raw JSON lines -> RESULTS.md.
report() {
    python3 - "$RESULTS_MD" "$@" <<'PY'
import json, os, statistics, sys

out_path, inputs = sys.argv[1], sys.argv[2:]

CASES = [
    ("echo-32", "echo, 64 connections × 32 B, window 16"),
    ("echo-1k", "echo, 64 connections × 1 KiB, window 16"),
    ("fanout-1k", "fan-out to 1,000 subscribers of one room, 64 B, max rate (1 publisher)"),
    ("fanout-10k", "fan-out to 10,000 subscribers of one room, 64 B, max rate (1 publisher)"),
    ("fanout-1k-20", "fan-out to 1,000 subscribers of one room, 64 B, 20 messages/s"),
    ("fanout-1k-100", "fan-out to 1,000 subscribers of one room, 64 B, 100 messages/s"),
    ("fanout-1k-200", "fan-out to 1,000 subscribers of one room, 64 B, 200 messages/s (200 k deliveries/s offered to every server)"),
    ("fanout-10k-20", "fan-out to 10,000 subscribers of one room, 64 B, 20 messages/s (200 k deliveries/s offered to every server)"),
    ("fanout-rooms", "fan-out over 1,000 rooms × 10 subscribers (10,000 subscribers), 64 B, 1 in flight per room"),
    ("fanout-rooms-w16", "fan-out over 1,000 rooms × 10 subscribers (10,000 subscribers), 64 B, 16 in flight per room"),
    ("idle-10k", "idle, 10,000 connections (each in one room)"),
    ("idle-19k", "idle, 19,000 connections (each in one room; 2 bench processes)"),
]
SERVERS = ["floor", "roomcast", "roomcast-noack", "roomcast-base", "tokio-tungstenite", "fastwebsockets", "uws", "node-ws", "socketio"]
# Targets for roomcast: (case, metric, limit, label)
TARGETS = [
    ("echo-32", "cpu", 0.40, "server CPU ≤ 0.40 µs per delivered message"),
    ("fanout-1k", "cpu", 0.45, "server CPU ≤ 0.45 µs per delivered message"),
    ("fanout-10k", "cpu", 0.45, "server CPU ≤ 0.45 µs per delivered message"),
    ("fanout-1k-20", "cpu", 6.5, "server CPU ≤ 6.5 µs per delivered message"),
    ("idle-10k", "rss", 1024, "RSS ≤ 1 KiB (1,024 B) per connection"),
    ("idle-19k", "rss", 1024, "RSS ≤ 1 KiB (1,024 B) per connection"),
]

runs = {}
meta = {}
for path in inputs:
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except ValueError:
                continue
            key = (r.get("case"), r.get("srv"))
            runs.setdefault(key, []).append(r)
            meta.setdefault("stamps", set()).add(r.get("stamp", "?"))
            meta.setdefault("commits", set()).add(r.get("commit", "?"))

def ok(r):
    return not r.get("failed") and not r.get("na")

def metric(r, name):
    s = r.get("server") or {}
    lat = r.get("latency_us") or {}
    return {
        "rate": r.get("messages_per_second"),
        "cpu": s.get("cpu_us_per_message"),
        "p50": lat.get("p50"),
        "p99": lat.get("p99"),
        "p999": lat.get("p999"),
        "rss": s.get("rss_per_connection_bytes"),
        "lost": r.get("lost"),
        "ooo": r.get("out_of_order"),
        "errors": r.get("errors"),
        "conns": r.get("connected"),
        "cpus": s.get("cpu_seconds"),
    }[name]

def values(key, name):
    return [v for v in (metric(r, name) for r in runs.get(key, []) if ok(r)) if v is not None]

def med(key, name):
    v = values(key, name)
    return statistics.median(v) if v else None

def fmt_num(x, kind):
    if x is None:
        return "–"
    if kind == "rate":
        return f"{x/1000:,.0f} k" if x >= 10000 else f"{x:,.0f}"
    if kind == "cpu":
        return f"{x:.3f}" if x < 10 else f"{x:.1f}"
    if kind == "lat":
        return f"{x/1000:.1f} ms" if x >= 10000 else f"{x:,.0f} µs"
    if kind == "rss":
        return f"{x:,.0f} B"
    if kind == "int":
        return f"{x:,.0f}"
    return str(x)

def cell(key, name, kind):
    rs = runs.get(key, [])
    if rs and all(r.get("na") for r in rs):
        return "n/a"
    v = values(key, name)
    if not v:
        return "failed" if rs else "not run"
    m = statistics.median(v)
    s = fmt_num(m, kind)
    if len(v) > 1 and min(v) != max(v):
        s += f" ({fmt_num(min(v), kind)}–{fmt_num(max(v), kind)})"
    failed = sum(1 for r in rs if r.get("failed"))
    if failed:
        s += f" [{failed} failed]"
    return s

def count_cell(key, name):
    rs = runs.get(key, [])
    if rs and all(r.get("na") for r in rs):
        return "n/a"
    v = values(key, name)
    if not v:
        if any(ok(r) for r in rs):
            return "–"  # not measured in this scenario (lost: echo has no expected count)
        return "failed" if rs else "not run"
    if len(v) == 1 or min(v) == max(v):
        return fmt_num(v[0], "int")
    return f"{fmt_num(statistics.median(v), 'int')} ({fmt_num(min(v),'int')}–{fmt_num(max(v),'int')})"

lines = []
w = lines.append
w("# roomcast compared with its peers")
w("")
w("Generated by `perf/compare.sh` from " + ", ".join(f"`perf/results/{os.path.basename(p)}`" for p in inputs) + ".")
w("Each server runs alone on core 0 (roomcast `--shards 1`, the tokio peers `PEER_THREADS=1`,")
w("uWebSockets and Node single-threaded), `roomcast bench --threads 1` on core 1; a fresh server for every run.")
w("Cells: median over the runs, (min–max) when they differ. **deliveries/s**: messages received by")
w("the bench clients per second of the bench's window; **CPU µs/msg**: server CPU time (user + system,")
w("all threads) over the window ÷ deliveries; latency from the send timestamp in each payload;")
w("**ratio**: peer's CPU µs/msg ÷ roomcast's (> 1: roomcast is cheaper), and roomcast's")
w("deliveries/s ÷ the peer's; **÷ floor**: the server's CPU µs/msg ÷ the floor's (`perf/peers/floor`: prebuilt")
w("frames, 16 per `writev`, no parsing beyond the handshake; the least a server can do per delivery).")
w("See perf/README.md, section *Comparison with peers*, for caveats.")
w("")

n_runs = max((len(v) for v in runs.values()), default=0)
w(f"Runs per cell: up to {n_runs}. Runs started (UTC): {', '.join(sorted(meta.get('stamps', [])))};"
  f" roomcast (server and bench) at commit {', '.join(sorted(meta.get('commits', [])))}.")
w("")

for case, title in CASES:
    if not any(k[0] == case for k in runs):
        continue
    idle = case.startswith("idle")
    w(f"## {case}: {title}")
    w("")
    ex = next((r for k, rs in runs.items() if k[0] == case for r in rs if r.get("args")), None)
    if ex:
        w(f"`roomcast bench {ex['args']}`")
        w("")
    if idle:
        w("| server | connections | RSS per connection | server CPU s (hold + close) | errors | ratio RSS peer ÷ roomcast |")
        w("|---|---|---|---|---|---|")
    else:
        w("| server | deliveries/s | CPU µs/msg | p50 | p99 | p99.9 | lost | out of order | errors | ratio CPU (peer ÷ roomcast) | ratio deliveries/s (roomcast ÷ peer) | CPU ÷ floor |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rc = (case, "roomcast")
    for srv in SERVERS:
        key = (case, srv)
        if key not in runs:
            continue
        if idle:
            ratio = "–"
            a, b = med(key, "rss"), med(rc, "rss")
            if srv != "roomcast" and a and b and b > 0:
                ratio = f"{a/b:.2f}"
            w(f"| {srv} | {count_cell(key,'conns')} | {cell(key,'rss','rss')} | {cell(key,'cpus','cpu')} | {count_cell(key,'errors')} | {ratio} |")
        else:
            rc_cpu, rc_rate = med(rc, "cpu"), med(rc, "rate")
            p_cpu, p_rate = med(key, "cpu"), med(key, "rate")
            if srv == "roomcast":
                r1 = r2 = "–"
            else:
                r1 = f"{p_cpu/rc_cpu:.2f}" if (p_cpu and rc_cpu) else cell(key, "cpu", "cpu") if not p_cpu else "–"
                r2 = f"{rc_rate/p_rate:.2f}" if (p_rate and rc_rate) else "–"
                if r1 in ("failed", "n/a", "not run"):
                    r2 = r1
            floor_cpu = med((case, "floor"), "cpu")
            r3 = f"{p_cpu/floor_cpu:.2f}" if (p_cpu and floor_cpu and srv != "floor") else "–"
            w(f"| {srv} | {cell(key,'rate','rate')} | {cell(key,'cpu','cpu')} | {cell(key,'p50','lat')} | {cell(key,'p99','lat')} | {cell(key,'p999','lat')} | {count_cell(key,'lost')} | {count_cell(key,'ooo')} | {count_cell(key,'errors')} | {r1} | {r2} | {r3} |")
    fails = [(r.get("srv"), r.get("run"), r.get("error", "")) for k, rs in runs.items() if k[0] == case for r in rs if r.get("failed")]
    if fails:
        w("")
        for srv, run, err in fails:
            w(f"* {srv} run {run} failed: {err}")
    w("")

profile = os.path.join(os.path.dirname(os.path.abspath(out_path)), "profile-summary.md")
if os.path.exists(profile):
    with open(profile) as f:
        w(f.read().rstrip("\n"))
    w("")

w("## roomcast's targets")
w("")
w("| case | target | roomcast (median) | verdict |")
w("|---|---|---|---|")
for case, name, limit, label in TARGETS:
    key = (case, "roomcast")
    m = med(key, name)
    if m is None:
        w(f"| {case} | {label} | {'failed' if key in runs else 'not run'} | – |")
        continue
    unit = " B" if name == "rss" else " µs"
    shown = f"{m:,.0f}{unit}" if name == "rss" else f"{m:.3f}{unit}"
    if m <= limit:
        verdict = f"**met** ({(limit-m)/limit*100:.0f}% under)"
    else:
        verdict = f"**missed** by {m-limit:,.3g}{unit} ({(m-limit)/limit*100:.0f}% over)"
    w(f"| {case} | {label} | {shown} | {verdict} |")
bad = []
total = 0
for (case, srv), rs in sorted(runs.items()):
    if srv != "roomcast":
        continue
    for r in rs:
        if not ok(r):
            continue
        total += 1
        lost, ooo = r.get("lost") or 0, r.get("out_of_order") or 0
        if lost or ooo:
            bad.append(f"{case} run {r.get('run')}: lost {lost}, out of order {ooo}")
label = "zero lost and zero out-of-order in every run"
if bad:
    w(f"| all | {label} | {len(bad)} of {total} runs not clean | **missed**: " + "; ".join(bad) + " |")
else:
    w(f"| all | {label} | {total} runs, all clean | **met** |")
w("")

with open(out_path, "w") as f:
    f.write("\n".join(lines) + "\n")
print(f"wrote {out_path}")
PY
}

if [ "${1:-}" = "--report" ]; then
    shift
    [ $# -gt 0 ] || { echo "usage: $0 --report FILE.jsonl..." >&2; exit 2; }
    report "$@"
    exit $?
fi

# ---------------------------------------------------------------- servers
# watch_rss PID: kills PID (SIGKILL) if its RSS passes MAX_SERVER_RSS_MB; leaves a note.
watch_rss() {
    local pid=$1 rss
    while kill -0 "$pid" 2>/dev/null; do
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
        if [ -n "$rss" ] && [ "$rss" -gt $((MAX_SERVER_RSS_MB * 1024)) ]; then
            echo "server RSS passed $MAX_SERVER_RSS_MB MiB; killed" >"$WORK/rss-killed"
            kill -KILL "$pid" 2>/dev/null
            return
        fi
        sleep 0.2
    done
}


# start_server NAME: fresh server on 127.0.0.1:0 pinned to SERVER_CORE;
# sets SERVER_PID and SERVER_PORT.
start_server() {
    local name=$1
    : >"$WORK/server.out"
    : >"$WORK/server.err"
    case $name in
        roomcast | roomcast-noack | roomcast-base)
            local bin=$BIN
            [ "$name" = roomcast-base ] && bin=${BASE_BIN:?BASE_BIN must name the earlier roomcast binary}
            # shellcheck disable=SC2086
            taskset -c "$SERVER_CORE" "$bin" serve --bind 127.0.0.1:0 --shards 1 \
                --jwt-secret "$SECRET" --echo --max-write-buffer 512KiB --log-level warn \
                $ROOMCAST_ARGS >"$WORK/server.out" 2>"$WORK/server.err" & ;;
        tokio-tungstenite | fastwebsockets | floor)
            PEER_THREADS=1 taskset -c "$SERVER_CORE" \
                "$CARGO_TARGET_DIR/release/peer-$name" 0 \
                >"$WORK/server.out" 2>"$WORK/server.err" & ;;
        uws)
            taskset -c "$SERVER_CORE" "$UWS_BIN" 0 \
                >"$WORK/server.out" 2>"$WORK/server.err" & ;;
        node-ws)
            taskset -c "$SERVER_CORE" node "$PERF_DIR/peers/node/ws-server.js" 0 \
                >"$WORK/server.out" 2>"$WORK/server.err" & ;;
        socketio)
            taskset -c "$SERVER_CORE" node "$PERF_DIR/peers/node/socketio-server.js" 0 \
                >"$WORK/server.out" 2>"$WORK/server.err" & ;;
        *) echo "unknown server $name" >&2; return 1 ;;
    esac
    SERVER_PID=$!
    SERVER_PORT=""
    for _ in $(seq 200); do
        SERVER_PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$WORK/server.out" | head -1)
        [ -n "$SERVER_PORT" ] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || { SERVER_PID=""; return 1; }
        sleep 0.05
    done
    stop_server
    return 1
}

target_of() {
    case $1 in
        roomcast | roomcast-noack | roomcast-base) echo roomcast ;;
        socketio) echo socketio ;;
        *) echo raw ;;
    esac
}

# record CASE SERVER RUN JSON-FIELDS... : appends one line to the results file.
record() {
    python3 - "$OUT" "$@" <<'PY'
import json, sys
out, case, server, run, args, kind, payload = sys.argv[1:8]
if kind == "ok":
    r = json.loads(payload)
else:
    r = {kind: True, "error": payload}
r = {"case": case, "srv": server, "run": int(run), "stamp": sys.argv[8], "commit": sys.argv[9], "args": args, **r}
if kind == "ok" and not r.get("delivered") and not r.get("scenario") == "idle":
    r = {**r, "failed": True, "error": "no message delivered"}
with open(out, "a") as f:
    f.write(json.dumps(r, separators=(",", ":")) + "\n")
PY
}

# ---------------------------------------------------------------- build
# The source measured: HEAD when building (with BUILD=0 the binary may be older).
COMMIT=$(cd "$REPO_DIR" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$REPO_DIR" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || COMMIT="$COMMIT+dirty"
[ "$BUILD" = 1 ] || COMMIT="prebuilt (HEAD was $COMMIT)"
if [ "$BUILD" = 1 ]; then
    echo "== building roomcast (release) and the peers" >&2
    (cd "$REPO_DIR" && cargo build --release --locked --quiet) || { echo "roomcast build failed" >&2; exit 1; }
    "$PERF_DIR/peers/build.sh" >&2 || echo "peers build failed; their cells will say failed" >&2
fi
[ -x "$BIN" ] || { echo "no $BIN" >&2; exit 1; }
# uWebSockets builds only from sources the caller names (perf/peers/README.md),
# so it runs only if its binary is there.
UWS_BIN=${UWS_BIN:-$CARGO_TARGET_DIR/uws/peer-uws}
if [[ " $SERVERS " == *" uws "* && ! -x $UWS_BIN ]]; then
    echo "== uws not run: no $UWS_BIN (set UWS_DIR and USOCKETS_DIR to build it; perf/peers/README.md)" >&2
    SERVERS=$(echo " $SERVERS " | sed 's/ uws / /' | xargs)
fi

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$PERF_DIR/results"
OUT="$PERF_DIR/results/compare-$STAMP.jsonl"
: >"$OUT"
echo "== results: $OUT (RUNS=$RUNS DURATION=$DURATION)" >&2

for c in $CASES; do
    if ! args=$(case_args "$c"); then
        echo "unknown case $c (known: $ALL_CASES)" >&2
        continue
    fi
    # Servers take turns within each run, so drift in the machine's load
    # spreads over all of them instead of favouring whichever ran first.
    for run in $(seq "$RUNS"); do
        for s in $SERVERS; do
            target=$(target_of "$s")
            # roomcast-noack: the same server, its publishers sending no
            # `id` (no ack to write), as the peers are measured.
            extra=""
            [[ $s == roomcast-noack && $args == fanout* ]] && extra="--no-ack"
            echo "-- $c / $s / run $run" >&2
            if ! start_server "$s"; then
                err=$(tail -c 300 "$WORK/server.err" | tr '\n' ' ')
                echo "   server did not start: $err" >&2
                record "$c" "$s" "$run" "$args" failed "server did not start: $err" "$STAMP" "$COMMIT"
                continue
            fi
            rm -f "$WORK/rss-killed"
            watch_rss "$SERVER_PID" &
            WATCH_PID=$!
            # shellcheck disable=SC2086
            timeout -k 5 "$BENCH_TIMEOUT" taskset -c "$BENCH_CORE" "$BIN" bench $args \
                --addr "127.0.0.1:$SERVER_PORT" --target "$target" --jwt-secret "$SECRET" \
                -d "$DURATION" --threads 1 --server-pid "$SERVER_PID" --json $BENCH_ARGS $extra \
                >"$WORK/bench.out" 2>"$WORK/bench.err"
            rc=$?
            kill "$WATCH_PID" 2>/dev/null
            wait "$WATCH_PID" 2>/dev/null
            alive=1
            kill -0 "$SERVER_PID" 2>/dev/null || alive=0
            stop_server
            line=$(grep '^{' "$WORK/bench.out" | tail -1)
            if [ $rc -ne 0 ] || [ -z "$line" ]; then
                err="bench exit $rc: $(grep -v '^\[' "$WORK/bench.err" | tail -c 300 | tr '\n' ' ')"
                [ $alive = 0 ] && err="server died; $err"
                [ -f "$WORK/rss-killed" ] && err="$(cat "$WORK/rss-killed"); $err"
                echo "   failed: $err" >&2
                record "$c" "$s" "$run" "$args" failed "$err" "$STAMP" "$COMMIT"
                continue
            fi
            if [ -f "$WORK/rss-killed" ]; then
                record "$c" "$s" "$run" "$args" failed "$(cat "$WORK/rss-killed")" "$STAMP" "$COMMIT"
                continue
            fi
            if [ $alive = 0 ]; then
                record "$c" "$s" "$run" "$args" failed "server died during the run" "$STAMP" "$COMMIT"
                continue
            fi
            record "$c" "$s" "$run" "$args" ok "$line" "$STAMP" "$COMMIT"
            python3 - "$line" >&2 <<'PY'
import json, sys
r = json.loads(sys.argv[1]); s = r.get("server") or {}; l = r["latency_us"]
print("   %12.0f msg/s  cpu %s us/msg  p50 %s p99 %s  lost %s ooo %s err %s rss/conn %s" % (
    r["messages_per_second"], s.get("cpu_us_per_message"), l["p50"], l["p99"],
    r["lost"], r["out_of_order"], r["errors"], s.get("rss_per_connection_bytes")))
PY
        done
    done
done

report "$OUT"
