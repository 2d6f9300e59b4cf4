#!/usr/bin/env bash
# What TLS costs the server, side by side in one run: the same server and
# the same offered load, plain (ws://) and TLS (wss://, --tls-cert with an
# ECDSA P-256 certificate made for the run), runs alternated:
#
#   connect   handshakes/s (TLS 1.3 + HTTP upgrade + JWT), 16 in flight
#   echo      64 connections x 32 B, window 16 (closed loop)
#   fanout    1,000 subscribers of one room, 64 B, 100 messages/s
#             (100,000 deliveries/s offered to both)
#   idle      5,000 connections each joined to a room: server RSS per
#             connection once the handshakes are done
#
# Reported: server CPU per handshake or per delivered message (the
# server's user + system time over the measured window), the rate, p50/p99.
#
#   perf/tls.sh                    # 3 runs of each, 5 s windows
#   RUNS=1 DURATION=3s perf/tls.sh
#   BASE_BIN=/path/to/older/roomcast SCENARIOS=fanout perf/tls.sh
#                                  # this build and an earlier one, runs
#                                  # alternated (the bench is this build's)
#
# Everything is on 127.0.0.1, each run is bounded, and only the processes
# this script started are stopped, by PID. Raw results go to
# perf/results/tls-<timestamp>.jsonl; a table is printed.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
set +e
RUNS=${RUNS:-3}
DURATION=${DURATION:-5s}
SCENARIOS=${SCENARIOS:-"connect echo fanout idle"}
OUT="$PERF_DIR/results/tls-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
mkdir -p "$PERF_DIR/results"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=localhost -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

run_one() { # SCENARIO TRANSPORT RUN BUILD
    local scenario=$1 transport=$2 run=$3 build=$4
    local BENCH_BIN=$BIN
    # start_server runs $BIN: the earlier build for `base`.
    local BIN=$BIN
    [ "$build" = base ] && BIN=$BASE_BIN
    local server_args=(--shards 2 --rate-limit 0 --echo --handshake-rate 0)
    local bench_args=(--threads 1)
    if [ "$transport" = tls ]; then
        server_args+=(--tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem")
        bench_args+=(--tls)
    fi
    case "$scenario" in
        connect) bench_args+=(connect -c 16) ;;
        echo) bench_args+=(echo -c 64 -w 16 -s 32) ;;
        fanout) bench_args+=(fanout -c 1000 --rooms 1 --publishers 1 -s 64 --rate 100) ;;
        idle) bench_args+=(idle -c 5000 --rooms 10) ;;
    esac
    start_server "${server_args[@]}" || return
    timeout 120 "$BENCH_BIN" bench "${bench_args[@]}" --addr "127.0.0.1:$SERVER_PORT" \
        --jwt-secret "$SECRET" -d "$DURATION" --json --server-pid "$SERVER_PID" \
        >"$WORK/bench.json" 2>"$WORK/bench.err"
    [ -s "$WORK/bench.json" ] || { echo "tls: $scenario/$transport run $run failed:" >&2; tail -3 "$WORK/bench.err" >&2; }
    python3 - "$scenario" "$transport" "$run" "$WORK/bench.json" "$build" >>"$OUT" <<'PY'
import json, sys
line = open(sys.argv[4]).read().strip()
if line:
    r = json.loads(line)
    r["scenario"], r["transport"], r["run"] = sys.argv[1], sys.argv[2], int(sys.argv[3])
    r["build"] = sys.argv[5]
    print(json.dumps(r))
PY
    stop_server
}

# BUILD=0 measures the binaries as they are (no build).
[ "${BUILD:-1}" = 1 ] && build_release
BUILDS=head
[ -n "${BASE_BIN:-}" ] && BUILDS="head base"
for run in $(seq "$RUNS"); do
    for scenario in $SCENARIOS; do
        for transport in plain tls; do
            for build in $BUILDS; do
                echo "tls: run $run, $scenario over $transport ($build)" >&2
                run_one "$scenario" "$transport" "$run" "$build"
            done
        done
    done
done

python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
med = statistics.median
print(f"raw: {sys.argv[1]}")
print("| scenario | transport | build | rate | server CPU µs per op | × plain | p50 µs | p99 µs | RSS B/conn | errors | lost | out of order |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for scenario, build in [(s, b) for s in ["connect", "echo", "fanout", "idle"] for b in ["head", "base"]]:
    base = None
    for transport in ["plain", "tls"]:
        rs = [r for r in rows if r["scenario"] == scenario and r["transport"] == transport
              and r.get("build", "head") == build]
        if not rs:
            continue
        key = "handshakes_per_second" if scenario == "connect" else "messages_per_second"
        unit = "handshakes/s" if scenario == "connect" else "msgs/s"
        cpu = med([r["server"]["cpu_us_per_message"] or 0 for r in rs])
        base = cpu if transport == "plain" else base
        # idle: nothing is measured per operation, only memory.
        rate = "-" if scenario == "idle" else f"{med([r[key] for r in rs]):,.0f} {unit}"
        cpu_text = "-" if scenario == "idle" else f"{cpu:.3f}"
        ratio = "-" if scenario == "idle" else f"{cpu / base if base else float('nan'):.2f}"
        print(f"| {scenario} | {transport} | {build} | {rate} | {cpu_text} | "
              f"{ratio} | {med([r['latency_us']['p50'] for r in rs]):,} | "
              f"{med([r['latency_us']['p99'] for r in rs]):,} | "
              f"{med([r['server']['rss_per_connection_bytes'] for r in rs]):,.0f} | {sum(r['errors'] for r in rs)} | "
              f"{sum(r['lost'] or 0 for r in rs)} | {sum(r['out_of_order'] for r in rs)} |")
PY
