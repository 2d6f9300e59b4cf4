#!/usr/bin/env bash
# The Redis CPU cost of one room message through roomcast_publish (INCR,
# XADD to the history, PEXPIREs, PUBLISH) against a plain PUBLISH of the same
# payload, measured side by side on one loopback redis-server with
# redis-benchmark. No subscriber: this is Redis' own work per publish.
#
#   perf/redis-function-cost.sh [REQUESTS] [RUNS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N="${1:-200000}"
RUNS="${2:-3}"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$PORT" -x FUNCTION LOAD REPLACE < "$ROOT/src/redis/roomcast.lua" >/dev/null
HEAD='{"event":"price:tick","room":"bench","data":{"bid":67001.5,"ask":67002.0},"from":"feed","seq":'
TAIL=',"ts":1700000000000}'
cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
run() { # label, command...
  local label="$1"; shift
  local before after
  before=$(cpu_ticks)
  redis-benchmark -p "$PORT" -n "$N" -c 4 -P 16 -q "$@" >/dev/null
  after=$(cpu_ticks)
  # Clock ticks are 1/100 s: microseconds of Redis CPU per call.
  awk -v t=$((after - before)) -v n="$N" -v l="$label" 'BEGIN {printf "%s %.3f\n", l, t * 10000 / n}'
}
for _ in $(seq "$RUNS"); do
  run publish PUBLISH 'roomcast:{bench}' "e1 1 n/1/- ${HEAD}1${TAIL}"
  run function FCALL roomcast_publish 4 'roomcast:{bench}:seq' 'roomcast:{bench}:epoch' \
    'roomcast:{bench}:log' 'roomcast:{bench}:members' "$HEAD" "$TAIL" e1 100 300000 n/1/- \
    'roomcast:{bench}'
  # The same room with members: its keys are persistent, no PEXPIRE per publish.
  redis-cli -p "$PORT" SET 'roomcast:{bench}:members' 1 >/dev/null
  run function-members FCALL roomcast_publish 4 'roomcast:{bench}:seq' 'roomcast:{bench}:epoch' \
    'roomcast:{bench}:log' 'roomcast:{bench}:members' "$HEAD" "$TAIL" e1 100 300000 n/1/- \
    'roomcast:{bench}'
  redis-cli -p "$PORT" DEL 'roomcast:{bench}:members' >/dev/null
done
