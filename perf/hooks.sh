#!/usr/bin/env bash
# Backend hooks (docs/hooks.md): what they cost one server on loopback.
#
#   publish  `roomcast bench` fan-out at a fixed offered rate, the server with
#            and without `--publish-proxy` (a local backend answering
#            {"result":{}} at once), alternated in pairs: delivery p50/p99,
#            server CPU per published message (and the hooks thread's share),
#            the backend's CPU per message
#   webhook  the same fan-out at --rate 0 (as fast as it goes) and at fixed
#            rates, the server with `--webhook URL --webhook-events
#            room.message --webhook-rooms '*'`: room.message events/s the
#            backend received, server CPU per message, the webhooks thread's
#            CPU per event, batch sizes; a run without the webhook first
#   connect  perf/connect_idle.py opens N connections (at most IN_FLIGHT
#            handshakes pending) to one server run with `--connect-proxy`,
#            with a JWT (the token decides) and without (the backend answers
#            {"result":{"sub":"u1"}}), alternated: handshakes/s, server CPU
#            per handshake (per-thread schedstat), the backend's CPU
#
#   perf/hooks.sh                         # everything (about 6 min)
#   PARTS=publish PAIRS=7 perf/hooks.sh
#
# Knobs: PARTS ("publish webhook connect"), PAIRS (5: off/on pairs for
# publish, jwt/proxy pairs for connect), PUB_ARGS (the publish fan-out),
# WEBHOOK_RATES ("0 20000": offered msgs/s; 0: max), WEBHOOK_RUNS (3),
# WEBHOOK_ARGS (the fan-out before --rate), CONNS (2000 handshakes per run),
# IN_FLIGHT (64), SHARDS (server --shards; empty: the default).
# The backend is perf/hook_backend.py (one asyncio process, every answer in
# one write). Every process is on 127.0.0.1 and bounded in time; only the
# processes started here are stopped, by PID. Raw JSON lines go to
# perf/results/hooks-<timestamp>.jsonl; perf/hooks_util.py report prints the
# tables.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
set +e
PARTS=${PARTS:-"publish webhook connect"}
PAIRS=${PAIRS:-5}
PUB_ARGS=${PUB_ARGS:-"fanout -c 100 --rooms 1 --publishers 1 -s 64 --rate 1000 -d 10s"}
WEBHOOK_RATES=${WEBHOOK_RATES:-"0 20000"}
WEBHOOK_RUNS=${WEBHOOK_RUNS:-3}
WEBHOOK_ARGS=${WEBHOOK_ARGS:-"fanout -c 1 --rooms 1 --publishers 1 -s 64 -w 64 -d 10s"}
CONNS=${CONNS:-2000}
IN_FLIGHT=${IN_FLIGHT:-64}
SHARDS=${SHARDS:-}
OUT="$PERF_DIR/results/hooks-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
mkdir -p "$PERF_DIR/results"
UTIL=(python3 "$PERF_DIR/hooks_util.py")
BACKEND_PID=""
BACKEND_PORT=""

# start_backend [ANSWER]: sets BACKEND_PID and BACKEND_PORT.
start_backend() {
    rm -f "$WORK/backend.port"
    python3 "$PERF_DIR/hook_backend.py" --port-file "$WORK/backend.port" ${1:+--answer "$1"} &
    BACKEND_PID=$!
    for _ in $(seq 100); do
        [ -s "$WORK/backend.port" ] && { BACKEND_PORT=$(cat "$WORK/backend.port"); return 0; }
        sleep 0.05
    done
    echo "hooks: backend did not start" >&2
    return 1
}

stop_backend() {
    [ -n "$BACKEND_PID" ] || return 0
    kill "$BACKEND_PID" 2>/dev/null
    wait "$BACKEND_PID" 2>/dev/null
    BACKEND_PID=""
}
trap 'stop_backend; cleanup' EXIT

backend_get() {
    python3 -c 'import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
        "http://127.0.0.1:$BACKEND_PORT$1"
}

# cpu_ticks PID: utime+stime of PID, clock ticks.
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

serve() { start_server ${SHARDS:+--shards "$SHARDS"} --rate-limit 0 "$@"; }

# bench_run ARGS...: `roomcast bench ARGS` against our server (bounded);
# the backend's stats are reset, and its CPU and the server's per-thread CPU
# read, when the bench starts measuring. Sets BENCH_JSON, T0 (threads
# JSON), T1, B0 and B1 (backend ticks), STATS (backend stats JSON).
bench_run() {
    : >"$WORK/bench.err"
    timeout 300 "$BIN" bench "$@" --addr "127.0.0.1:$SERVER_PORT" --jwt-secret "$SECRET" \
        --server-pid "$SERVER_PID" --json >"$WORK/bench.json" 2>"$WORK/bench.err" &
    local bench=$!
    wait_measuring "$WORK/bench.err" "$bench"
    backend_get /reset >/dev/null
    T0=$("${UTIL[@]}" threads "$SERVER_PID")
    B0=$(cpu_ticks "$BACKEND_PID")
    wait "$bench"
    T1=$("${UTIL[@]}" threads "$SERVER_PID")
    B1=$(cpu_ticks "$BACKEND_PID")
    STATS=$(backend_get /stats)
    BENCH_JSON=$(cat "$WORK/bench.json")
}

# record PART MODE PAIR RATE: one JSON line to OUT from the last bench_run.
record() {
    python3 - "$1" "$2" "$3" "$4" "$BENCH_JSON" "$T0" "$T1" "$B0" "$B1" "$STATS" \
        "$(getconf CLK_TCK)" "$(server_metric roomcast_webhook_dropped_total 2>/dev/null || echo 0)" <<'PY' >>"$OUT"
import json, sys
part, mode, pair, rate, bench, t0, t1, b0, b1, stats, tck, dropped = sys.argv[1:]
b, t0, t1, s = json.loads(bench), json.loads(t0), json.loads(t1), json.loads(stats)
# The bench's own server CPU is utime+stime from its start to its end; the
# thread deltas are ns from the measured window's start to the bench's end.
dt = {k: (t1.get(k, 0) - t0.get(k, 0)) / 1e3 for k in t1}
sent, dur = b["sent"], b["duration_seconds"]
events = s["events"]
r = {"part": part, "mode": mode, "pair": int(pair), "rate": int(float(rate)),
     "sent": sent, "sent_per_s": round(sent / dur, 1), "delivered": b["delivered"],
     "lost": b["lost"], "errors": b["errors"],
     "p50": b["latency_us"]["p50"], "p99": b["latency_us"]["p99"], "p999": b["latency_us"]["p999"],
     "cpu_us_per_msg": round(dt["total"] / sent, 3) if sent else None,
     "hooks_us_per_msg": round(dt.get("hooks", 0) / sent, 3) if sent else None,
     "threads_us": {k: round(v) for k, v in dt.items()},
     "backend_requests": s["requests"], "events": events,
     "events_per_s": round(events / dur, 1),
     "webhooks_us_per_event": round(dt.get("webhooks", 0) / events, 3) if events else None,
     "backend_us_per_msg": round((float(b1) - float(b0)) * 1e6 / float(tck) / sent, 3) if sent else None,
     "backend_us_per_event": round((float(b1) - float(b0)) * 1e6 / float(tck) / events, 3) if events else None,
     "mean_batch": round(events / s["batches"], 2) if s["batches"] else None,
     "sizes": s["sizes"], "dropped": int(dropped), "bench": b}
print(json.dumps(r))
PY
}

build_release
TOKEN=$(mint_token)
for part in $PARTS; do
    case $part in
    publish)
        start_backend || exit 1
        for pair in $(seq "$PAIRS"); do
            order="off on"
            [ $((pair % 2)) -eq 0 ] && order="on off"
            for mode in $order; do
                echo "hooks: publish pair $pair, proxy $mode" >&2
                if [ "$mode" = on ]; then
                    serve --publish-proxy "http://127.0.0.1:$BACKEND_PORT/publish" || continue
                else
                    serve || continue
                fi
                # shellcheck disable=SC2086
                bench_run $PUB_ARGS
                record publish "$mode" "$pair" 0
                stop_server
            done
        done
        stop_backend ;;
    webhook)
        start_backend || exit 1
        for run in $(seq "$WEBHOOK_RUNS"); do
            for rate in $WEBHOOK_RATES; do
                for mode in off on; do
                    echo "hooks: webhook run $run, rate $rate, webhook $mode" >&2
                    if [ "$mode" = on ]; then
                        serve --webhook "http://127.0.0.1:$BACKEND_PORT/events" \
                            --webhook-events room.message --webhook-rooms '*' || continue
                    else
                        serve || continue
                    fi
                    # shellcheck disable=SC2086
                    bench_run $WEBHOOK_ARGS --rate "$rate"
                    record webhook "$mode" "$run" "$rate"
                    stop_server
                done
            done
        done
        stop_backend ;;
    connect)
        start_backend '{"result":{"sub":"u1"}}' || exit 1
        for pair in $(seq "$PAIRS"); do
            order="jwt proxy"
            [ $((pair % 2)) -eq 0 ] && order="proxy jwt"
            for mode in $order; do
                echo "hooks: connect pair $pair, $mode" >&2
                serve --connect-proxy "http://127.0.0.1:$BACKEND_PORT/connect" || continue
                token=$TOKEN
                [ "$mode" = proxy ] && token=""
                b0=$(cpu_ticks "$BACKEND_PID")
                timeout 300 python3 "$PERF_DIR/connect_idle.py" --url-port "$SERVER_PORT" \
                    --token "$token" --conns "$CONNS" --server-pid "$SERVER_PID" \
                    --in-flight "$IN_FLIGHT" --hold 0 --timeout 120 --json 2>/dev/null \
                    >"$WORK/connect.json"
                b1=$(cpu_ticks "$BACKEND_PID")
                python3 - "$mode" "$pair" "$b0" "$b1" "$(getconf CLK_TCK)" "$WORK/connect.json" <<'PY' >>"$OUT"
import json, sys
mode, pair, b0, b1, tck, path = sys.argv[1:]
c = json.loads(open(path).read().strip().splitlines()[-1])
n = max(c["conns_open"], 1)
print(json.dumps({"part": "connect", "mode": mode, "pair": int(pair),
                  "handshakes_per_s": c["handshakes_per_s"],
                  "cpu_us": c["server_cpu_us_per_handshake_ns"],
                  "hooks_us": round(c["thread_cpu_s"].get("hooks", 0) * 1e6 / n, 2),
                  "backend_us": round((float(b1) - float(b0)) * 1e6 / float(tck) / n, 2),
                  "errors": sum(c["errors"].values()), "conns_open": c["conns_open"],
                  "raw": c}))
PY
                stop_server
            done
        done
        stop_backend ;;
    esac
done

"${UTIL[@]}" report "$OUT"
echo "raw: $OUT" >&2
