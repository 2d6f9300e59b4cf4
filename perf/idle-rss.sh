#!/usr/bin/env bash
# Resident memory per idle, authenticated /ws connection.
#
# Builds release, starts a fresh server (--shards 2), opens CONNS (10,000)
# idle /ws connections with perf/connect_idle.py, holds them HOLD seconds
# and reports (RSS after - RSS before) / CONNS. The target is < 1 KiB.
#
# That figure includes one-off costs that do not grow with connections
# (buffer pools, the first pages of each shard's connection table, malloc
# arenas), so the script also runs a second fresh server with SMALL (1,000)
# connections and reports the marginal cost
#     (RSS(CONNS) - RSS(SMALL)) / (CONNS - SMALL),
# which is what each further connection adds. RSS is user-space memory only:
# the kernel's per-socket memory (struct sock, epoll item, file) is not in it.
#
#   perf/idle-rss.sh                       # CONNS=10000 SMALL=1000 REPS=3
#   CONNS=15000 perf/idle-rss.sh

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONNS=${CONNS:-10000}
SMALL=${SMALL:-1000}
REPS=${REPS:-3}
HOLD=${HOLD:-3}
IN_FLIGHT=${IN_FLIGHT:-64}

build_release
TOKEN=$(mint_token)
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"

echo "# idle RSS: --shards 2, $CONNS and $SMALL idle /ws connections, $REPS runs each, hold ${HOLD}s"
echo "# $(date -u +%FT%TZ)  $(nproc) cores  load: $(cut -d' ' -f1-3 /proc/loadavg)"
for rep in $(seq "$REPS"); do
    for n in "$CONNS" "$SMALL"; do
        start_server --shards 2
        line=$(python3 "$PERF_DIR/connect_idle.py" --url-port "$SERVER_PORT" --token "$TOKEN" \
            --conns "$n" --server-pid "$SERVER_PID" --in-flight "$IN_FLIGHT" --hold "$HOLD" \
            --json 2>"$WORK/client.err") || { echo "run failed:" >&2; cat "$WORK/client.err" >&2; }
        stop_server
        echo "  run $rep n=$n: $(cat "$WORK/client.err")"
        [ -n "$line" ] && echo "{\"n\":$n,\"rep\":$rep,\"result\":$line}" >>"$RESULTS"
    done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$RESULTS" "$CONNS" "$SMALL" <<'EOF'
import json, statistics, sys

runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
big, small = int(sys.argv[2]), int(sys.argv[3])

def med(vals):
    return statistics.median(vals), min(vals), max(vals)

per = [r["result"]["rss_per_conn_bytes"] for r in runs if r["n"] == big]
rss_big = [r["result"]["rss_after_bytes"] for r in runs if r["n"] == big]
rss_small = [r["result"]["rss_after_bytes"] for r in runs if r["n"] == small]
before = [r["result"]["rss_before_bytes"] for r in runs]
m, lo, hi = med(per)
print(f"\nRSS of a fresh server: {statistics.median(before) / 1024:.0f} KiB (median)")
print(f"RSS per idle connection, {big} conns: {m:.0f} B = {m / 1024:.2f} KiB "
      f"(median; min-max {lo:.0f}-{hi:.0f} B)  target < 1024 B: {'met' if m < 1024 else 'NOT met'}")
if rss_big and rss_small:
    marg = (statistics.median(rss_big) - statistics.median(rss_small)) / (big - small)
    print(f"marginal RSS per connection, ({big} - {small}) conns: {marg:.0f} B = {marg / 1024:.2f} KiB "
          f"(from median RSS {statistics.median(rss_small) / 1024:.0f} KiB at {small}, "
          f"{statistics.median(rss_big) / 1024:.0f} KiB at {big})")
EOF
