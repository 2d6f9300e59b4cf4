#!/usr/bin/env bash
# Counts that do not depend on the machine's noise: the server's system
# calls, turns and writes per delivered message, for one or more roomcast
# binaries taking turns (interleaved), under `roomcast bench`.
#
#   BINS="head=target/release/roomcast base=/tmp/base/roomcast" perf/syscalls.sh
#   CASES="fanout-1k fanout-10k" RUNS=3 WINDOW=3 perf/syscalls.sh
#
# Each run: a fresh server (`--shards 1`, compare.sh's flags) pinned to
# SERVER_CORE, the bench pinned to BENCH_CORE for DURATION; one second into
# the bench's measured window, `perf stat` counts the server's syscall
# tracepoints for WINDOW seconds while /metrics gives the messages and bytes
# it queued and wrote over the same window, and the threads' schedstat their
# CPU time. Prints one JSON line per run, then the medians per case and binary.
#
# Environment: BINS (name=path ...; default: this tree's release build),
# CASES ("echo-32 fanout-1k"), RUNS (3), WINDOW (3 s), DURATION (8s),
# SERVER_CORE (0), BENCH_CORE (1). The bench binary is the first of BINS.
# Needs `perf` with the syscalls tracepoints. Loopback only; every run is
# bounded; only the servers started here are stopped, by PID.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
set +e
BINS=${BINS:-"roomcast=$BIN"}
CASES=${CASES:-"echo-32 fanout-1k"}
RUNS=${RUNS:-3}
WINDOW=${WINDOW:-3}
DURATION=${DURATION:-8s}
SERVER_CORE=${SERVER_CORE:-0}
BENCH_CORE=${BENCH_CORE:-1}
BENCH_BIN=${BINS%% *}
BENCH_BIN=${BENCH_BIN#*=}
EVENTS="raw_syscalls:sys_enter,syscalls:sys_enter_writev,syscalls:sys_enter_write,syscalls:sys_enter_sendto,syscalls:sys_enter_read,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_futex"
OUT=$WORK/runs.jsonl

# cpu_ns: the server's threads' CPU time (schedstat), nanoseconds.
cpu_ns() {
    cat /proc/"$SERVER_PID"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {print s}'
}

one_run() {
    local case=$1 name=$2 bin=$3 run=$4 args=$5
    start_pinned_roomcast "$bin" || { echo "server did not start" >&2; return; }
    # shellcheck disable=SC2086
    timeout -k 5 120 taskset -c "$BENCH_CORE" "$BENCH_BIN" bench $args \
        --addr "127.0.0.1:$SERVER_PORT" --jwt-secret "$SECRET" -d "$DURATION" \
        --threads 1 --server-pid "$SERVER_PID" --json >"$WORK/bench.out" 2>"$WORK/bench.err" &
    local bench=$!
    if ! wait_measuring "$WORK/bench.err" "$bench"; then
        echo "bench did not start: $(tail -c 300 "$WORK/bench.err")" >&2
        wait "$bench"; stop_server; return
    fi
    sleep 1
    local m0 b0 c0 m1 b1 c1
    m0=$(server_metric roomcast_messages_sent_total); b0=$(server_metric roomcast_bytes_sent_total); c0=$(cpu_ns)
    perf stat -x, -e "$EVENTS" -p "$SERVER_PID" -o "$WORK/perf.csv" -- sleep "$WINDOW" 2>/dev/null
    m1=$(server_metric roomcast_messages_sent_total); b1=$(server_metric roomcast_bytes_sent_total); c1=$(cpu_ns)
    wait "$bench"
    stop_server
    python3 - "$OUT" "$case" "$name" "$run" "$WORK/perf.csv" "$m0" "$m1" "$b0" "$b1" "$c0" "$c1" "$WORK/bench.out" <<'PY'
import json, sys
out, case, name, run, csv, m0, m1, b0, b1, c0, c1, bench = sys.argv[1:13]
counts = {}
for line in open(csv):
    f = line.strip().split(",")
    if len(f) > 2 and f[0].replace(".", "").isdigit():
        counts[f[2].split(":")[-1].replace("sys_enter_", "") or "all"] = float(f[0])
msgs = float(m1) - float(m0)
r = {"case": case, "bin": name, "run": int(run), "messages": msgs, "bytes": float(b1) - float(b0),
     "cpu_us_per_msg": (float(c1) - float(c0)) / 1e3 / msgs if msgs else None}
r.update({f"{k}_per_msg": v / msgs for k, v in counts.items() if msgs})
# Output leaves by `writev`, or by `send` (`sendto`) when it is one slice.
sends = sum(counts.get(k, 0) for k in ("writev", "write", "sendto"))
r["msgs_per_send"] = msgs / sends if sends else None
r["bytes_per_send"] = r["bytes"] / sends if sends else None
try:
    b = json.loads([l for l in open(bench) if l.startswith("{")][-1])
    r["bench_msgs_per_s"] = b["messages_per_second"]
    r["bench_cpu_us_per_msg"] = (b.get("server") or {}).get("cpu_us_per_message")
except (IndexError, ValueError, KeyError):
    pass
print(json.dumps(r))
with open(out, "a") as f:
    f.write(json.dumps(r) + "\n")
PY
}

for c in $CASES; do
    args=$(case_args "$c") || { echo "unknown case $c" >&2; continue; }
    for run in $(seq "$RUNS"); do
        for pair in $BINS; do
            one_run "$c" "${pair%%=*}" "${pair#*=}" "$run" "$args"
        done
    done
done

python3 - "$OUT" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
keys = ["cpu_us_per_msg", "bench_cpu_us_per_msg", "bench_msgs_per_s", "sys_enter_per_msg", "writev_per_msg",
        "sendto_per_msg", "msgs_per_send", "bytes_per_send", "read_per_msg", "epoll_wait_per_msg",
        "epoll_pwait_per_msg", "epoll_ctl_per_msg", "write_per_msg", "futex_per_msg"]
groups = {}
for r in runs:
    groups.setdefault((r["case"], r["bin"]), []).append(r)
print("\nmedians (runs):")
print("| case | binary | " + " | ".join(keys) + " |")
print("|---|---|" + "---|" * len(keys))
for (case, name), rs in groups.items():
    cells = []
    for k in keys:
        vals = [r[k] for r in rs if r.get(k) is not None]
        cells.append(f"{statistics.median(vals):.4g}" if vals else "–")
    print(f"| {case} | {name} ({len(rs)}) | " + " | ".join(cells) + " |")
PY
