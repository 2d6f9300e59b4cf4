#!/usr/bin/env bash
# Up to one million WebSocket connections on this one machine: `roomcast
# serve --processes N` on one port (SO_REUSEPORT), joined through one
# redis-server, held by `roomcast bench idle` (its worker processes, over
# as many loopback source addresses as the ephemeral ports need). Every
# connection has its own token (`sub` bench-<n>), is a member of one of
# CONNS/1000 rooms (1,000 members each) and of the room `all` that every
# connection joins. The connections are held for HOLD, while one publisher
# sends RATE messages a second into the rooms of 1,000 (in turn) and one
# into the room of all every COMMON_EVERY; then one JSON line: connections
# held, errors by kind, connect time and handshakes/s, the time until each
# message's last delivery (p50/p99/max, rooms and the room of all apart),
# memory apart and per connection (the nodes' RSS summed, the bench's,
# Redis' used_memory and RSS, the kernel's slab and TCP socket memory).
#
#   CONNS=100000 perf/million.sh      # quick looks: 100k, 250k, 500k
#   perf/million.sh                   # CONNS=1000000
#   RATE=0 COMMON_EVERY= perf/million.sh   # connections only, no message
#   CONNS=20000 HOLD=2s EXPECT_ALL=1 ROOMCAST_BIN=target/debug/roomcast perf/million.sh
#
# Kernel settings the run needs are raised (never lowered) for the run and
# put back on exit; each is explained where it is set. Without the right to
# write /proc/sys the run goes on with what is there and says so. Raw JSON
# goes to perf/results/million-<timestamp>.json. Loopback only, bounded in
# time (the connect phase by CONNECT_LIMIT, the hold by HOLD); only the
# processes started here are stopped, by PID.
#
# Environment: CONNS (1000000), HOLD (30s), RATE (10 messages/s), COMMON_EVERY
# (10s; empty: none), PROCESSES (from CONNS, below), SERVE_ARGS (more
# `serve` flags), MIN_AVAILABLE_MIB (1536: below it the run is stopped),
# RECONNECT (0: a share of the connections that closes and connects again
# every second of the hold, recovering its rooms: 0.01 is 1 %),
# PRESENCE_EVENT_LIMIT (1, below), PROBES (20 timed requests to node 0's /stats, dashboard and `info` over
# the hold),
# CONNECT_LIMIT (seconds; from CONNS), CONNECT_TIMEOUT (30s: a connection's,
# until its joins are acknowledged), ROOMCAST_BIN (a built binary; else a
# release build), EXPECT_ALL=1 (exit 1 unless every connection was held
# without an error: for scripts/test.sh), KEEP=0 (no raw JSON file).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
set +e

CONNS=${CONNS:-1000000}
HOLD=${HOLD:-30s}
RATE=${RATE:-10}
COMMON_EVERY=${COMMON_EVERY-10s}
# A node may hold its open-file limit less what roomcast keeps for itself
# (128) and a margin for Redis links and listeners. SO_REUSEPORT spreads
# connections by a hash, not evenly: the nodes are sized to 80% on average.
OPEN_FILES=$(ulimit -n)
MAX_PER_NODE=$(( OPEN_FILES - 200 ))
FILL=$(( MAX_PER_NODE * 8 / 10 ))
PROCESSES=${PROCESSES:-$(( (CONNS + FILL - 1) / FILL ))}
ROOMS=$(( CONNS / 1000 > 0 ? CONNS / 1000 : 1 ))
# One ephemeral port per connection per (source address, destination)
# pair: 25,000 a source address fits even the default port range.
PER_SOURCE=25000
SOURCES=$(( (CONNS + PER_SOURCE - 1) / PER_SOURCE ))
# At a pessimistic 2,000 handshakes/s, plus room for the start of 50 workers.
CONNECT_LIMIT=${CONNECT_LIMIT:-$(( CONNS / 2000 + 60 ))}
COMMON_ROOM=all
OUT=/dev/null
if [ "${KEEP:-1}" = 1 ]; then
    OUT="$PERF_DIR/results/million-$(date -u +%Y%m%dT%H%M%SZ).json"
    mkdir -p "$PERF_DIR/results"
fi

if [ "$PROCESSES" -gt 64 ]; then
    echo "million: $CONNS connections need $PROCESSES nodes of $FILL; roomcast runs at most 64" >&2
    exit 2
fi
if [ -n "${ROOMCAST_BIN:-}" ]; then
    BIN=$ROOMCAST_BIN
else
    build_release
fi

# --- kernel settings ---------------------------------------------------
SYSCTL_SAVED=()
# raise_sysctl KEY VALUE...: sets KEY to at least VALUE (field by field for
# tcp_mem's three numbers), remembering the old value for restore_sysctls.
raise_sysctl() {
    local key=$1 path="/proc/sys/${1//.//}"
    shift
    [ -e "$path" ] || return 0
    local old new
    old=$(tr -s ' \t' '  ' <"$path")
    new=$(awk -v want="$*" '{ n = split(want, w, " "); out = ""
        for (i = 1; i <= n; i++) out = out (i > 1 ? " " : "") (($i + 0 >= w[i] + 0) ? $i : w[i])
        print out }' <<<"$old")
    [ "$new" = "$old" ] && return 0
    if echo "$new" >"$path" 2>/dev/null; then
        SYSCTL_SAVED+=("$path=$old")
        echo "million: $key $old -> $new" >&2
    else
        echo "million: cannot raise $key (now $old, wanted $new): the run may fail for it" >&2
    fi
}
restore_sysctls() {
    local entry
    for entry in "${SYSCTL_SAVED[@]}"; do
        echo "${entry#*=}" >"${entry%%=*}" 2>/dev/null
    done
    SYSCTL_SAVED=()
}

PAGE=$(getconf PAGESIZE)
# Each node's listen backlog (roomcast asks for 4096) is cut to somaxconn:
# past it the kernel drops SYNs of a connect storm, and the bench's
# clients wait 1 s, 3 s, ... for retries and time out.
raise_sysctl net.core.somaxconn 4096
# Half-open connections per listener while the handshakes pour in.
raise_sysctl net.ipv4.tcp_max_syn_backlog 65536
# Both ends of every connection are on this machine: two files each, and
# the machine's other processes besides.
raise_sysctl fs.file-max $(( CONNS * 2 + 200000 ))
# The per-process ceiling of the open-file limit; each process stays under
# its 20,000 here, so this only guards a machine set lower.
raise_sysctl fs.nr_open "$OPEN_FILES"
# Socket memory of all TCP sockets, in pages: a socket with data queued
# holds at least a page, and both ends count. Below "pressure" nothing is
# shrunk; at "max" the kernel drops data ("TCP: out of memory").
raise_sysctl net.ipv4.tcp_mem $(( CONNS )) $(( CONNS * 2 )) $(( CONNS * 3 ))
# Loopback connections are tracked too when conntrack is loaded: a full
# table drops SYNs ("nf_conntrack: table full").
raise_sysctl net.netfilter.nf_conntrack_max $(( CONNS * 2 + 65536 ))
# The ephemeral ports of each source address (the default 32768-60999
# gives 28,231; PER_SOURCE stays below either way, this is headroom).
PORTS=/proc/sys/net/ipv4/ip_local_port_range
if [ -w "$PORTS" ] && [ "$(awk '{print $2 - $1}' "$PORTS")" -lt 55000 ]; then
    SYSCTL_SAVED+=("$PORTS=$(tr -s ' \t' '  ' <"$PORTS")")
    echo "10240 65535" >"$PORTS"
fi

BENCH_PID=""
PROBE_PID=""
finish() {
    if [ -n "$BENCH_PID" ]; then
        kill "$BENCH_PID" 2>/dev/null
        wait "$BENCH_PID" 2>/dev/null
    fi
    [ -n "$GUARD_PID" ] && kill "$GUARD_PID" 2>/dev/null
    [ -n "$PROBE_PID" ] && kill "$PROBE_PID" 2>/dev/null
    stop_server
    stop_redis
    restore_sysctls
    # LOGS=DIR keeps the nodes' and the bench's stderr and JSON for a look
# afterwards.
    [ -n "${LOGS:-}" ] && mkdir -p "$LOGS" && cp "$WORK"/*.err "$WORK"/*.json "$LOGS"/ 2>/dev/null
    rm -rf "$WORK"
}
trap finish EXIT

# --- the memory guard ----------------------------------------------------
# The machine is shared: rather than let the OOM killer pick someone else's
# process, the run stops everything it started when MemAvailable falls
# under MIN_AVAILABLE_MIB, and says so (`aborted` in the JSON line).
MIN_AVAILABLE_MIB=${MIN_AVAILABLE_MIB:-1536}
LOW_MEMORY=""
available_mib() { awk '$1 == "MemAvailable:" { print int($2 / 1024) }' /proc/meminfo; }
# guard_memory PID...: in the background, every 0.5 s; on low memory writes
# $WORK/low-memory and SIGKILLs the PIDs given and their children.
guard_memory() {
    local pids="$*"
    (
        while sleep 0.5; do
            local mib
            mib=$(available_mib)
            [ "$mib" -ge "$MIN_AVAILABLE_MIB" ] && continue
            echo "$mib" >"$WORK/low-memory"
            local pid
            for pid in $pids; do
                kill_tree "$pid"
            done
            exit 0
        done
    ) &
    GUARD_PID=$!
}
GUARD_PID=""
# kill_tree PID: SIGKILL to PID and its descendants, by PID.
kill_tree() {
    local child
    kill -STOP "$1" 2>/dev/null
    for child in $(ps -o pid= --ppid "$1"); do
        kill_tree "$child"
    done
    kill -KILL "$1" 2>/dev/null
}
# exit_if_guarded: the JSON line of a run the guard stopped, and exit 1.
exit_if_guarded() {
    [ -s "$WORK/low-memory" ] || return 0
    BENCH_PID=""
    echo "{\"conns\": $CONNS, \"aborted\": \"MemAvailable fell to $(cat "$WORK/low-memory") MiB (< $MIN_AVAILABLE_MIB)\"}" | tee "$OUT"
    exit 1
}
HZ=$(getconf CLK_TCK)
# snapshot ROOT "SERVER_PIDS" REDIS_PID: one pass over /proc (a fork per
# process is too slow with 120 busy processes on 2 cores: the held state
# was read after the window was over); prints the CPU ticks of the server
# pids and Redis, the server pids' RSS (bytes), and the CPU ticks and RSS
# of ROOT's descendants (the bench's orchestrator and workers).
snapshot() {
    python3 - "$@" <<'PY'
import os, sys
root, servers, redis = int(sys.argv[1] or 0), [int(p) for p in sys.argv[2].split()], int(sys.argv[3])
parent, ticks = {}, {}
for name in os.listdir("/proc"):
    if not name.isdigit():
        continue
    try:
        fields = open(f"/proc/{name}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    parent[int(name)] = int(fields[1])
    ticks[int(name)] = int(fields[11]) + int(fields[12])
def rss(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
tree, frontier = set(), ({root} if root else set())
while frontier:
    frontier = {p for p, pp in parent.items() if pp in frontier} - tree
    tree |= frontier
print(sum(ticks.get(p, 0) for p in servers + [redis]), sum(rss(p) for p in servers),
      sum(ticks.get(p, 0) for p in tree), sum(rss(p) for p in tree))
PY
}

# --- what the machine holds before -------------------------------------
meminfo_kib() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }
tcp_mem_pages() { awk '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == "mem") print $(i + 1) }' /proc/net/sockstat; }
slab_before=$(meminfo_kib Slab)
tcp_before=$(tcp_mem_pages)

start_redis
# Redis answers a turn of its event loop at once: it reads every node's
# commands, runs them, and only then writes the replies. With 64 nodes and
# 56 bench workers runnable on 2 cores, the scheduler gave Redis a few ms
# in every few hundred, a turn of ~120 ms of work took over 2 s, no node
# heard a reply within --redis-timeout and every link was dropped (the
# second 1M attempt, 700,000 connections in). Redis is the one process
# every node waits on: it runs at nice -15 for the run (put back with it).
renice -n -15 -p "$REDIS_PID" >/dev/null 2>&1 ||
    echo "million: cannot raise Redis' priority: the run may fail for it" >&2
redis_info() { timeout 10 redis-cli -p "$REDIS_PORT" INFO memory | tr -d '\r' | sed -n "s/^$1://p"; }
redis_used_before=$(redis_info used_memory)
redis_rss_before=$(redis_info used_memory_rss)

PORT=$(free_port)
# /stats, the dashboard and the Server API on their own port per node
# (node i on METRICS_PORT + i), as an operator would run them: node 0's
# are timed during the hold.
METRICS_PORT=$(python3 -c '
import random, socket
for _ in range(1000):
    base = random.randrange(20000, 60000)
    try:
        for port in range(base, base + '"$PROCESSES"'):
            s = socket.socket(); s.bind(("127.0.0.1", port)); s.close()
        print(base); break
    except OSError:
        pass')
if [ -z "$METRICS_PORT" ]; then
    echo "million: no $PROCESSES free ports in a row for --metrics-bind" >&2
    exit 1
fi
API_KEY=perf-api-key-$RANDOM$RANDOM
# Presence events: a room of 1,000 announces each join to the members
# before it, 500 presence deliveries per join on average (half a million
# per room), which made 85% of the connect phase's CPU (407 µs a
# handshake with them, 60 without, at 20,000). The run keeps presence
# counted (Redis' share of it is measured) but sends no events past
# PRESENCE_EVENT_LIMIT members (1; the server's default is 1000).
PRESENCE_EVENT_LIMIT=${PRESENCE_EVENT_LIMIT:-1}
# shellcheck disable=SC2086
"$BIN" serve --bind "127.0.0.1:$PORT" --jwt-secret "$SECRET" --log-level warn --rate-limit 0 \
    --redis "$REDIS_URL" --processes "$PROCESSES" --shards 1 \
    --metrics-bind "127.0.0.1:$METRICS_PORT" --api-key "$API_KEY" \
    --max-connections "$MAX_PER_NODE" --presence-event-limit "$PRESENCE_EVENT_LIMIT" \
    ${SERVE_ARGS:-} >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
nodes=$(node_pids "$SERVER_PID" "$PROCESSES")
# The supervisor's memory counts too, when there is one.
server_pids=$nodes
[ "$PROCESSES" -gt 1 ] && server_pids="$SERVER_PID $nodes"
for _ in $(seq 200); do
    grep -q 'listening on' "$WORK/server.out" && break
    sleep 0.05
done
if ! grep -q 'listening on' "$WORK/server.out"; then
    echo "million: the server did not start:" >&2
    tail -n 5 "$WORK/server.err" >&2
    exit 1
fi
read -r cpu_start server_rss_before _ _ < <(snapshot 0 "$server_pids" "$REDIS_PID")

sources=$(for i in $(seq 0 $(( SOURCES - 1 ))); do
    echo "127.0.$(( 2 + i / 250 )).$(( 1 + i % 250 ))"
done | paste -sd,)
started=$(date +%s.%N)
timeout $(( CONNECT_LIMIT + 120 )) "$BIN" bench idle --addr "127.0.0.1:$PORT" --jwt-secret "$SECRET" \
    -c "$CONNS" --rooms "$ROOMS" --common-room "$COMMON_ROOM" -d "$HOLD" -t 1 \
    --rate "$RATE" ${COMMON_EVERY:+--common-every "$COMMON_EVERY"} --reconnect-rate "${RECONNECT:-0}" \
    --connect-limit "${CONNECT_LIMIT}s" --connect-timeout "${CONNECT_TIMEOUT:-30s}" --src-ips "$sources" \
    --json --server-pid "$(tr ' ' ',' <<<"$server_pids")" \
    >"$WORK/bench.json" 2>"$WORK/bench.err" &
BENCH_PID=$!
# shellcheck disable=SC2086
guard_memory "$BENCH_PID" $server_pids "$REDIS_PID"
# The connect phase is bounded by the bench's --connect-limit.
for _ in $(seq $(( (CONNECT_LIMIT + 60) * 10 ))); do
    grep -qs 'measuring for' "$WORK/bench.err" && break
    kill -0 "$BENCH_PID" 2>/dev/null || break
    sleep 0.1
done
connected_at=$(date +%s.%N)
# The held state, just after the window began (every connection the bench
# will hold is open by then).
read -r cpu_connected server_rss bench_cpu_connected bench_rss \
    < <(snapshot "$BENCH_PID" "$server_pids" "$REDIS_PID")
opened=$(sed -n 's/^roomcast bench: \([0-9]*\) connections open.*/\1/p' "$WORK/bench.err" | head -1)

redis_used=$(redis_info used_memory)
redis_rss=$(redis_info used_memory_rss)
slab=$(meminfo_kib Slab)
tcp=$(tcp_mem_pages)
tcp_inuse=$(awk '$1 == "TCP:" { print $3 }' /proc/net/sockstat)
if ! kill -0 "$BENCH_PID" 2>/dev/null; then
    exit_if_guarded
    echo "million: the bench ended before its connections were measured (HOLD=$HOLD too short?)" >&2
    exit 1
fi

# PROBES requests to node 0 spread over the hold: /stats, the dashboard
# page and the Server API's `info` (every node's connections), each timed.
PROBES=${PROBES:-20}
hold_seconds=$(sed 's/s$//' <<<"$HOLD")
python3 - "$METRICS_PORT" "$API_KEY" "$PROBES" "${hold_seconds%%[!0-9.]*}" >"$WORK/probes.json" <<'PY' &
import json, sys, time, urllib.request
port, key, probes, hold = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4] or 1)
base = f"http://127.0.0.1:{port}"
times = {"stats": [], "dashboard": [], "info": []}
failed = {name: 0 for name in times}
cluster = []
def timed(name, request):
    began = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            body = answer.read()
        times[name].append((time.monotonic() - began) * 1000)
        return body
    except Exception:
        failed[name] += 1
# Within the hold: a page that does not answer in 5 s counts as a failure.
deadline = time.monotonic() + hold
for _ in range(probes):
    if time.monotonic() > deadline:
        break
    timed("stats", base + "/stats")
    timed("dashboard", base + "/")
    info = timed("info", urllib.request.Request(base + "/api/info", data=b"{}",
                 headers={"X-API-Key": key, "Content-Type": "application/json"}))
    if info:
        try:
            nodes = json.loads(info)["result"]["nodes"]
            cluster.append((sum(n["connections"] for n in nodes), len(nodes)))
        except Exception:
            pass
    time.sleep(max(hold * 0.9 / probes, 0.05))
def spread(ms):
    ms = sorted(ms)
    if not ms:
        return None
    return {"n": len(ms), "p50_ms": round(ms[len(ms) // 2], 1), "max_ms": round(ms[-1], 1)}
print(json.dumps({"probes": {k: spread(v) for k, v in times.items()}, "probe_failures": failed,
                  # The largest sum any `info` gave, and how many nodes it
                  # counted (a node too busy to answer in time is left out).
                  "cluster_connections_by_info": max(cluster)[0] if cluster else None,
                  "nodes_in_info": max(cluster)[1] if cluster else None}))
PY
PROBE_PID=$!

wait "$BENCH_PID"
BENCH_PID=""
read -r cpu_end _ _ _ < <(snapshot 0 "$server_pids" "$REDIS_PID")
wait "$PROBE_PID" 2>/dev/null
PROBE_PID=""
exit_if_guarded
if [ -n "${LOGS:-}" ]; then
    # What Redis spent its time on: per command, and the slowest calls.
    { redis-cli -p "$REDIS_PORT" INFO commandstats; redis-cli -p "$REDIS_PORT" SLOWLOG GET 20; } \
        >"$WORK/redis.err" 2>&1
fi
if [ ! -s "$WORK/bench.json" ]; then
    echo "million: the bench failed:" >&2
    tail -n 5 "$WORK/bench.err" "$WORK/server.err" >&2
    exit 1
fi
refusals=$(grep -c 'WARN refused' "$WORK/server.err")
python3 - "$WORK/bench.json" <<PY | tee "$OUT"
import json, sys
bench = json.load(open(sys.argv[1]))
conns = max(bench["connected"], 1)
connect_seconds = $connected_at - $started
def per(total):
    return round(total / conns, 1)
figures = {
    "server_rss_bytes": $server_rss - $server_rss_before,
    "bench_rss_bytes": $bench_rss,
    "redis_used_memory_bytes": ${redis_used:-0} - ${redis_used_before:-0},
    "redis_rss_bytes": ${redis_rss:-0} - ${redis_rss_before:-0},
    "kernel_slab_bytes": (${slab:-0} - ${slab_before:-0}) * 1024,
    "kernel_tcp_mem_bytes": (${tcp:-0} - ${tcp_before:-0}) * $PAGE,
}
result = {
    "conns": $CONNS, "processes": $PROCESSES, "rooms": $ROOMS, "common_room": "$COMMON_ROOM",
    "source_addresses": $SOURCES, "hold": "$HOLD",
    "connected": bench["connected"], "opened": int("${opened:-0}" or 0),
    "errors": bench["errors"], "errors_by_kind": bench.get("errors_by_kind", {}),
    "sent": bench["sent"], "delivered": bench["delivered"],
    # With RECONNECT: the handshakes past the first of each connection are
    # reconnections, and "recovered" their joins answered recovered: true.
    "reconnect_rate": float("${RECONNECT:-0}"), "handshakes": bench["handshakes"],
    "recovered": bench.get("recovered", 0),
    "last_delivery_us": bench.get("last_delivery_us"),
    "server_refusal_lines": $refusals,
    "connect_seconds": round(connect_seconds, 2),
    "handshakes_per_second": round(int("${opened:-0}" or 0) / max(connect_seconds, 1e-9), 1),
    "tcp_sockets_in_use": int("${tcp_inuse:-0}" or 0),
    # CPU seconds (user + system) of every node, the supervisor and Redis:
    # over the connect phase (the bench's apart), and from the hold's start
    # to the bench's end (the window and its drain).
    "connect_cpu_seconds": round(($cpu_connected - $cpu_start) / $HZ, 2),
    "connect_bench_cpu_seconds": round($bench_cpu_connected / $HZ, 2),
    "hold_cpu_seconds": round(($cpu_end - $cpu_connected) / $HZ, 2),
}
opened = max(result["opened"], 1)
result["connect_cpu_us_per_handshake"] = round(result["connect_cpu_seconds"] * 1e6 / opened, 1)
result["hold_cpu_us_per_delivery"] = round(result["hold_cpu_seconds"] * 1e6 / max(bench["delivered"], 1), 2)
try:
    result.update(json.load(open("$WORK/probes.json")))
except (OSError, ValueError):
    pass
for name, total in figures.items():
    result[name] = total
    result[name.replace("_bytes", "_per_connection_bytes")] = per(total)
print(json.dumps(result))
def all_held_and_delivered():
    publisher = 1 if float("$RATE") > 0 or "$COMMON_EVERY" else 0
    if bench["connected"] != $CONNS + publisher or bench["errors"] != 0:
        return False
    spread = bench.get("last_delivery_us") or {}
    messages = {k: (spread.get(k) or {}).get("messages", 0) for k in ("rooms", "common")}
    expected = messages["rooms"] * ($CONNS // $ROOMS) + messages["common"] * $CONNS
    exact = $CONNS % $ROOMS == 0
    return sum(messages.values()) == bench["sent"] and (not exact or bench["delivered"] == expected)
if "${EXPECT_ALL:-}" == "1" and not all_held_and_delivered():
    sys.exit(1)
PY
