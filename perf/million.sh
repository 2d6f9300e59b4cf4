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
# (10s; empty: none), PROCESSES (from CONNS, below),
# CONNECT_LIMIT (seconds; from CONNS), ROOMCAST_BIN (a built binary; else a
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
finish() {
    if [ -n "$BENCH_PID" ]; then
        kill "$BENCH_PID" 2>/dev/null
        wait "$BENCH_PID" 2>/dev/null
    fi
    stop_server
    stop_redis
    restore_sysctls
    rm -rf "$WORK"
}
trap finish EXIT

# --- what the machine holds before -------------------------------------
meminfo_kib() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }
tcp_mem_pages() { awk '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == "mem") print $(i + 1) }' /proc/net/sockstat; }
rss_of() { # rss_of PID...: VmRSS summed, bytes
    local pid kib total=0
    for pid in "$@"; do
        kib=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$pid/status" 2>/dev/null)
        total=$(( total + ${kib:-0} ))
    done
    echo $(( total * 1024 ))
}
slab_before=$(meminfo_kib Slab)
tcp_before=$(tcp_mem_pages)

start_redis
redis_info() { redis-cli -p "$REDIS_PORT" INFO memory | tr -d '\r' | sed -n "s/^$1://p"; }
redis_used_before=$(redis_info used_memory)
redis_rss_before=$(redis_info used_memory_rss)

PORT=$(free_port)
"$BIN" serve --bind "127.0.0.1:$PORT" --jwt-secret "$SECRET" --log-level warn --rate-limit 0 \
    --redis "$REDIS_URL" --processes "$PROCESSES" --shards 1 \
    --max-connections "$MAX_PER_NODE" >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
nodes=$(node_pids "$SERVER_PID" "$PROCESSES")
# The supervisor's memory counts too, when there is one.
server_pids=$nodes
[ "$PROCESSES" -gt 1 ] && server_pids="$SERVER_PID $nodes"
for _ in $(seq 200); do
    grep -q 'listening on' "$WORK/server.out" && break
    sleep 0.05
done
# shellcheck disable=SC2086
server_rss_before=$(rss_of $server_pids)

sources=$(for i in $(seq 0 $(( SOURCES - 1 ))); do
    echo "127.0.$(( 2 + i / 250 )).$(( 1 + i % 250 ))"
done | paste -sd,)
started=$(date +%s.%N)
timeout $(( CONNECT_LIMIT + 120 )) "$BIN" bench idle --addr "127.0.0.1:$PORT" --jwt-secret "$SECRET" \
    -c "$CONNS" --rooms "$ROOMS" --common-room "$COMMON_ROOM" -d "$HOLD" -t 1 \
    --rate "$RATE" ${COMMON_EVERY:+--common-every "$COMMON_EVERY"} \
    --connect-limit "${CONNECT_LIMIT}s" --src-ips "$sources" \
    --json --server-pid "$(tr ' ' ',' <<<"$server_pids")" \
    >"$WORK/bench.json" 2>"$WORK/bench.err" &
BENCH_PID=$!
# The connect phase is bounded by the bench's --connect-limit.
for _ in $(seq $(( (CONNECT_LIMIT + 60) * 10 ))); do
    grep -qs 'measuring for' "$WORK/bench.err" && break
    kill -0 "$BENCH_PID" 2>/dev/null || break
    sleep 0.1
done
connected_at=$(date +%s.%N)
opened=$(sed -n 's/^roomcast bench: \([0-9]*\) connections open.*/\1/p' "$WORK/bench.err" | head -1)

# The held state, just after the window began (every connection the bench
# will hold is open by then).
sleep 0.2
# shellcheck disable=SC2086
server_rss=$(rss_of $server_pids)
# The bench runs under `timeout`: its orchestrator, and the workers under it.
orchestrator=$(children_of "$BENCH_PID")
# shellcheck disable=SC2046,SC2086
bench_rss=$(rss_of $orchestrator $(for p in $orchestrator; do children_of "$p"; done))
redis_used=$(redis_info used_memory)
redis_rss=$(redis_info used_memory_rss)
slab=$(meminfo_kib Slab)
tcp=$(tcp_mem_pages)
tcp_inuse=$(awk '$1 == "TCP:" { print $3 }' /proc/net/sockstat)
if ! kill -0 "$BENCH_PID" 2>/dev/null; then
    echo "million: the bench ended before its connections were measured (HOLD=$HOLD too short?)" >&2
    exit 1
fi

wait "$BENCH_PID"
BENCH_PID=""
if [ ! -s "$WORK/bench.json" ]; then
    echo "million: the bench failed:" >&2
    tail -5 "$WORK/bench.err" "$WORK/server.err" >&2
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
    "last_delivery_us": bench.get("last_delivery_us"),
    "server_refusal_lines": $refusals,
    "connect_seconds": round(connect_seconds, 2),
    "handshakes_per_second": round(int("${opened:-0}" or 0) / max(connect_seconds, 1e-9), 1),
    "tcp_sockets_in_use": int("${tcp_inuse:-0}" or 0),
}
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
