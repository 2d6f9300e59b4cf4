#!/usr/bin/env bash
# User-space instructions per delivered message, counted by callgrind: a
# figure the machine's noise does not move (the kernel's share is not in
# it), for one or more roomcast binaries, and which functions differ.
#
#   BINS="after=target/release/roomcast before=/tmp/before/roomcast" perf/instructions.sh
#   CASES="echo-32 fanout-1k-20" WINDOW=5 perf/instructions.sh
#
# Beside instructions it prints the allocator calls (malloc, calloc,
# realloc) per message, and per publish: per call of `wire::room_frame`,
# which writes each sequenced publish's one frame (fan-out cases).
#
# Each run: a fresh server (`--shards 1`, compare.sh's flags) under
# `valgrind --tool=callgrind` pinned to SERVER_CORE, the bench pinned to
# BENCH_CORE; two seconds into the bench's window the counters are zeroed
# (`callgrind_control -z`), WINDOW seconds later dumped, and /metrics gives
# the messages queued in between. Under callgrind the server is the slower
# side, so at max rate its batches (frames per writev) are larger than
# natively: compare binaries within one case, not with native runs.
#
# Environment: BINS (name=path ...; default: this tree's release build),
# CASES ("echo-32 fanout-1k fanout-1k-20"), WINDOW (5), SERVER_CORE (0),
# BENCH_CORE (1). The bench binary is the first of BINS. Loopback only;
# every run is bounded; only the servers started here are stopped, by PID.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
set +e
BINS=${BINS:-"roomcast=$BIN"}
CASES=${CASES:-"echo-32 fanout-1k fanout-1k-20"}
WINDOW=${WINDOW:-5}
SERVER_CORE=${SERVER_CORE:-0}
BENCH_CORE=${BENCH_CORE:-1}
BENCH_BIN=${BINS%% *}
BENCH_BIN=${BENCH_BIN#*=}

# one_run CASE NAME BIN ARGS: prints "CASE NAME MESSAGES PROFILE".
one_run() {
    local case=$1 name=$2 bin=$3 args=$4 profile=$WORK/$1-$2.callgrind
    start_pinned_roomcast "$bin" valgrind --tool=callgrind --compress-strings=no \
        --compress-pos=no --callgrind-out-file="$profile.%p" ||
        { echo "server did not start" >&2; return; }
    # shellcheck disable=SC2086
    timeout -k 5 200 taskset -c "$BENCH_CORE" "$BENCH_BIN" bench $args \
        --addr "127.0.0.1:$SERVER_PORT" --jwt-secret "$SECRET" -d "$((WINDOW + 6))s" \
        --threads 1 --json >"$WORK/bench.out" 2>"$WORK/bench.err" &
    local bench=$! pid=$SERVER_PID m0 m1
    wait_measuring "$WORK/bench.err" "$bench" || { wait "$bench"; stop_server; return; }
    sleep 2
    callgrind_control -z "$SERVER_PID" >/dev/null
    m0=$(server_metric roomcast_messages_sent_total)
    sleep "$WINDOW"
    m1=$(server_metric roomcast_messages_sent_total)
    callgrind_control -d "$SERVER_PID" >/dev/null
    wait "$bench"
    stop_server
    echo "$case $name $((m1 - m0)) $profile.$pid.1"
}

: >"$WORK/runs"
for c in $CASES; do
    args=$(case_args "$c") || { echo "unknown case $c" >&2; continue; }
    for pair in $BINS; do
        echo "-- $c / ${pair%%=*}" >&2
        one_run "$c" "${pair%%=*}" "${pair#*=}" "$args" >>"$WORK/runs"
    done
done

# Self cost per function (cost lines after a `calls=` line are a callee's
# inclusive cost, not the function's own), per message, against the first
# binary; and the calls into the allocator.
python3 - "$WORK/runs" <<'PY'
import collections, sys

ALLOCATORS = {"malloc", "calloc", "realloc"}
PUBLISH = "roomcast::proto::wire::room_frame"

def self_costs(path):
    costs, fn, cfn, callee = collections.Counter(), None, None, False
    allocs = publishes = 0
    for line in open(path):
        if line.startswith("fn="):
            fn = line[3:].strip()
        elif line.startswith("cfn="):
            cfn = line[4:].strip()
        elif line.startswith("calls="):
            callee = True
            calls = int(line.split()[0][6:])
            if cfn in ALLOCATORS and fn not in ALLOCATORS:
                allocs += calls
            if cfn == PUBLISH and fn != PUBLISH:
                publishes += calls
        elif line[:1].isdigit():
            if callee:
                callee = False
            elif fn:
                costs[fn] += int(line.split()[1])
    return costs, allocs, publishes

by_case = collections.defaultdict(list)
for line in open(sys.argv[1]):
    case, name, messages, path = line.split()
    costs, allocs, publishes = self_costs(path)
    by_case[case].append((name, int(messages), int(publishes), costs, allocs))
for case, runs in by_case.items():
    print(f"\n{case}: user-space instructions per message; allocator calls per message, per publish")
    for name, messages, publishes, costs, allocs in runs:
        per_publish = f"{allocs / publishes:6.2f}" if publishes else "     -"
        print(f"  {name:10} {sum(costs.values()) / max(messages, 1):8.1f}  "
              f"{allocs / max(messages, 1):6.2f} {per_publish}  ({messages} messages, {publishes} publishes)")
    first_name, first_n, _, first, _ = runs[0]
    for name, messages, _, costs, _ in runs[1:]:
        print(f"  functions differing most, {first_name} - {name}, per message:")
        diff = {k: first[k] / max(first_n, 1) - costs[k] / max(messages, 1) for k in set(first) | set(costs)}
        for k in sorted(diff, key=lambda k: -abs(diff[k]))[:8]:
            print(f"    {diff[k]:+8.1f}  {k[:100]}")
PY
