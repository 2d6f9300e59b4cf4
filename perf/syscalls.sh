#!/usr/bin/env bash
# Counts that do not depend on the machine's noise: the server's system
# calls per delivered message, for roomcast builds and benchmark peers
# (perf/peers) taking turns (interleaved), under `roomcast bench`.
#
#   BINS="head=target/release/roomcast base=/tmp/base/roomcast" perf/syscalls.sh
#   CASES="fanout-1k fanout-10k" RUNS=3 WINDOW=3 perf/syscalls.sh
#   PEERS="uws=target/uws/peer-uws" CASES="echo-32 fanout-1k" perf/syscalls.sh
#
# Each run: a fresh server (roomcast: `--shards 1`, compare.sh's flags; a
# peer: `PEER 0`, one thread) pinned to SERVER_CORE, the bench pinned to
# BENCH_CORE for DURATION; one second into the bench's measured window,
# `perf stat` counts the server's syscall tracepoints for WINDOW seconds.
# perf stat's command takes a snapshot, sleeps WINDOW and takes another, so
# the counters cover the interval between the snapshots. Bytes written: the
# kernel's `bytes_sent` of the server's sockets (`ss -ti`). Deliveries:
# roomcast's /metrics (messages it wrote); a peer has none, so its bytes ÷
# the size of the one frame every delivery is (`--target raw`: the bench's
# payload with a 2-byte header). The bench's own average rate × the interval
# is printed beside them as a check. iovecs per writev: `perf stat` counts writev calls with
# `vlen` at or above each of a few bounds (tracepoint filters), which brackets
# the mean (lo-hi; the estimate takes each bucket's midpoint). CPU: the
# server threads' schedstat. Prints one JSON line per run, then the medians
# per case and server.
#
# Environment: BINS (name=path ... roomcast builds; default: this tree's
# release build), PEERS (name=path ... peers, driven as `--target raw`;
# default none), CASES ("echo-32 fanout-1k"), RUNS (3), WINDOW (3 s),
# DURATION (8s), SERVER_CORE (0), BENCH_CORE (1). The bench binary is the
# first of BINS. Needs `perf` with the syscalls tracepoints and `ss`.
# Loopback only; every run is bounded; only the servers started here are
# stopped, by PID.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
set +e
BINS=${BINS:-"roomcast=$BIN"}
PEERS=${PEERS:-}
CASES=${CASES:-"echo-32 fanout-1k"}
RUNS=${RUNS:-3}
WINDOW=${WINDOW:-3}
DURATION=${DURATION:-8s}
SERVER_CORE=${SERVER_CORE:-0}
BENCH_CORE=${BENCH_CORE:-1}
BENCH_BIN=${BINS%% *}
BENCH_BIN=${BENCH_BIN#*=}
SYSCALLS="writev write sendto sendmsg read readv recvfrom recvmsg epoll_wait epoll_pwait epoll_pwait2 epoll_ctl futex"
# Lower bounds of the writev `vlen` buckets; the python below repeats them.
VLEN_BOUNDS="2 3 4 8 12 14 15 16 17 18 19 20 24 32 33 48 64 65"
OUT=$WORK/runs.jsonl

# perf_events: the -e/--filter arguments, in the order the report reads them.
perf_events() {
    local s b
    echo "-e raw_syscalls:sys_enter"
    for s in $SYSCALLS; do echo "-e syscalls:sys_enter_$s"; done
    for b in $VLEN_BOUNDS; do echo "-e syscalls:sys_enter_writev --filter vlen>=$b"; done
}

# cpu_ns: the server's threads' CPU time (schedstat), nanoseconds.
cpu_ns() {
    cat /proc/"$SERVER_PID"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {print s}'
}

# sent_bytes: the bytes the server's sockets have sent (kernel `bytes_sent`).
sent_bytes() {
    ss -tinH state established "( sport = :$SERVER_PORT )" 2>/dev/null |
        grep -o 'bytes_sent:[0-9]*' | awk -F: '{s += $2} END {printf "%d\n", s}'
}

# messages_sent KIND: roomcast's /metrics count; `-` for a peer.
messages_sent() {
    if [ "$1" = roomcast ]; then server_metric roomcast_messages_sent_total; else echo -; fi
}

# snapshot KIND: "time messages bytes cpu_ns" of the server now.
snapshot() {
    echo "$(date +%s.%N) $(messages_sent "$1") $(sent_bytes) $(cpu_ns)"
}

one_run() {
    local case=$1 name=$2 kind=$3 bin=$4 run=$5 args=$6 target=roomcast
    if [ "$kind" = roomcast ]; then
        start_pinned_roomcast "$bin" || { echo "server did not start" >&2; return; }
    else
        target=raw
        start_pinned_peer "$bin" || { echo "$name did not start" >&2; return; }
    fi
    # shellcheck disable=SC2086
    timeout -k 5 120 taskset -c "$BENCH_CORE" "$BENCH_BIN" bench $args \
        --addr "127.0.0.1:$SERVER_PORT" --target "$target" --jwt-secret "$SECRET" -d "$DURATION" \
        --threads 1 --server-pid "$SERVER_PID" --json >"$WORK/bench.out" 2>"$WORK/bench.err" &
    local bench=$!
    if ! wait_measuring "$WORK/bench.err" "$bench"; then
        echo "bench did not start: $(tail -c 300 "$WORK/bench.err")" >&2
        wait "$bench"; stop_server; return
    fi
    sleep 1
    # The snapshots run inside perf stat's command, so the counters cover
    # the interval between them (and a few milliseconds more).
    export SERVER_PID SERVER_PORT
    export -f snapshot messages_sent server_metric sent_bytes cpu_ns
    # shellcheck disable=SC2046
    perf stat -x, $(perf_events) -p "$SERVER_PID" -o "$WORK/perf.csv" -- \
        bash -c "snapshot $kind >'$WORK/snap0'; sleep $WINDOW; snapshot $kind >'$WORK/snap1'" 2>/dev/null
    local t0 m0 b0 c0 t1 m1 b1 c1
    read -r t0 m0 b0 c0 <"$WORK/snap0"
    read -r t1 m1 b1 c1 <"$WORK/snap1"
    wait "$bench" || echo "$name: bench exit $?: $(grep -v '^\[' "$WORK/bench.err" | tail -c 400)" >&2
    stop_server
    python3 - "$OUT" "$case" "$name" "$run" "$WORK/perf.csv" "$SYSCALLS" "$VLEN_BOUNDS" \
        "$m0" "$m1" "$b0" "$b1" "$t0" "$t1" "$c0" "$c1" "$WORK/bench.out" "$args" <<'PY'
import json, sys
(out, case, name, run, csv, syscalls, bounds,
 m0, m1, b0, b1, t0, t1, c0, c1, bench, args) = sys.argv[1:18]
counts = [float(f[0]) if f[0].replace(".", "").isdigit() else 0.0
          for f in (line.strip().split(",") for line in open(csv))
          if len(f) > 2 and f[2].startswith(("raw_syscalls:", "syscalls:"))]
window = float(t1) - float(t0)
names = ["all"] + syscalls.split()
bounds = [int(b) for b in bounds.split()]
calls = dict(zip(names, counts))
at_least = dict(zip(bounds, counts[len(names):]))
r = {"case": case, "server": name, "run": int(run), "window_s": window}
try:
    b = json.loads([l for l in open(bench) if l.startswith("{")][-1])
    r["bench_msgs_per_s"] = b["messages_per_second"]
    r["bench_cpu_us_per_msg"] = (b.get("server") or {}).get("cpu_us_per_message")
except (IndexError, ValueError, KeyError):
    pass
# Deliveries in the perf window: roomcast counts them. A peer's are its bytes
# ÷ the frame every delivery is (the bench's raw payload, a record of at
# least RECORD_LEN = 35 bytes, and a 2-byte header under 126 bytes; nothing
# else is sent in the steady state). The bench's average rate × the window
# checks both.
r["bytes"] = float(b1) - float(b0)
argv = args.split()
size = max(int(argv[argv.index("-s") + 1]), 35)
r["frame_bytes"] = size + (2 if size < 126 else 4 if size < 65536 else 10)
r["msgs_metrics"] = float(m1) - float(m0) if m0 != "-" else None
r["msgs_bytes"] = r["bytes"] / r["frame_bytes"] if m0 == "-" else None
r["msgs_bench"] = r.get("bench_msgs_per_s", 0) * window
msgs = r["msgs_metrics"] or r["msgs_bytes"]
if msgs:
    r["cpu_us_per_msg"] = (float(c1) - float(c0)) / 1e3 / msgs
    r.update({f"{k}_per_msg": v / msgs for k, v in calls.items()})
    writes = sum(calls.get(k, 0) for k in ("write", "writev", "sendto", "sendmsg"))
    r["write_calls_per_msg"] = writes / msgs
    r["read_calls_per_msg"] = sum(calls.get(k, 0) for k in ("read", "readv", "recvfrom", "recvmsg")) / msgs
    r["epoll_waits_per_msg"] = sum(calls.get(k, 0) for k in ("epoll_wait", "epoll_pwait", "epoll_pwait2")) / msgs
    r["msgs_per_write_call"] = msgs / writes if writes else None
    r["bytes_per_write_call"] = r["bytes"] / writes if writes else None
n = calls.get("writev", 0)
if n:
    # Buckets [1,2), [2,3), ... [64,65), [65,∞): each call counted once.
    edges = [1] + bounds
    ge = [n] + [at_least[b] for b in bounds]
    lo = hi = mid = 0.0
    for i, a in enumerate(edges):
        k = ge[i] - (ge[i + 1] if i + 1 < len(ge) else 0)
        top = edges[i + 1] - 1 if i + 1 < len(edges) else 1024  # IOV_MAX
        lo, hi, mid = lo + k * a, hi + k * top, mid + k * (a + top) / 2
    r["iov_per_writev"] = mid / n
    r["iov_per_writev_range"] = [lo / n, hi / n]
print(json.dumps(r))
with open(out, "a") as f:
    f.write(json.dumps(r) + "\n")
PY
}

for c in $CASES; do
    args=$(case_args "$c") || { echo "unknown case $c" >&2; continue; }
    for run in $(seq "$RUNS"); do
        for pair in $BINS; do
            one_run "$c" "${pair%%=*}" roomcast "${pair#*=}" "$run" "$args"
        done
        for pair in $PEERS; do
            one_run "$c" "${pair%%=*}" peer "${pair#*=}" "$run" "$args"
        done
    done
done

python3 - "$OUT" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
keys = ["cpu_us_per_msg", "bench_msgs_per_s", "all_per_msg", "write_calls_per_msg", "writev_per_msg",
        "write_per_msg", "sendto_per_msg", "sendmsg_per_msg", "iov_per_writev", "msgs_per_write_call",
        "bytes_per_write_call", "read_calls_per_msg", "epoll_waits_per_msg", "epoll_ctl_per_msg",
        "futex_per_msg", "msgs_metrics", "msgs_bytes", "msgs_bench", "window_s"]
groups = {}
for r in runs:
    groups.setdefault((r["case"], r["server"]), []).append(r)
print("\nmedians (runs):")
print("| case | server | " + " | ".join(keys) + " |")
print("|---|---|" + "---|" * len(keys))
for (case, name), rs in groups.items():
    cells = []
    for k in keys:
        vals = [r[k] for r in rs if r.get(k) is not None]
        cells.append(f"{statistics.median(vals):.4g}" if vals else "–")
    print(f"| {case} | {name} ({len(rs)}) | " + " | ".join(cells) + " |")
PY
