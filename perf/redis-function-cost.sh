#!/usr/bin/env bash
# The Redis CPU cost of one room message through roomcast_publish (INCR,
# XADD to the history, PUBLISH, and without members the PEXPIREs) against a
# plain PUBLISH of the same payload, measured side by side on one loopback
# redis-server with redis-benchmark. No subscriber: this is Redis' own work
# per publish.
#
#   perf/redis-function-cost.sh [REQUESTS] [RUNS]
#   BASELINE=main perf/redis-function-cost.sh 1000000 5
#
# With BASELINE=<git revision>, that revision's library is loaded too (as
# library `baseline`, its functions renamed `baseline_*`) and called with
# the arguments its nodes sent, taking turns with the current one in every
# run. A function that does nothing (`floor_noop`), called with the same
# keys and arguments as roomcast_publish of one message, shows what any FCALL of that
# shape costs before it makes a call. The PUBLISH rows run 5 x REQUESTS calls: a bare PUBLISH costs a few
# hundred ns, and /proc counts CPU in 10 ms ticks. Prints every run, then
# the medians and their ratios to PUBLISH, then INFO commandstats of one
# extra pass of each function (the calls it makes inside, µs per call).
# The batch-K rows call roomcast_publish with K messages at a time, as a
# node sends the publishes to a room it took in one turn (REQUESTS
# messages in REQUESTS / K calls), and give µs per message.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N="${1:-200000}"
RUNS="${2:-3}"
BASELINE="${BASELINE:-}"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$PORT" -x FUNCTION LOAD REPLACE < "$ROOT/src/redis/roomcast.lua" >/dev/null
if [ -n "$BASELINE" ]; then
  git -C "$ROOT" show "$BASELINE:src/redis/roomcast.lua" \
    | sed -e '1s/name=roomcast/name=baseline/' -e "s/register_function('roomcast_/register_function('baseline_/" \
    | redis-cli -p "$PORT" -x FUNCTION LOAD REPLACE >/dev/null
fi
printf '#!lua name=floor\nredis.register_function("floor_noop", function() return 1 end)\n' \
  | redis-cli -p "$PORT" -x FUNCTION LOAD REPLACE >/dev/null
HEAD='{"event":"price:tick","room":"bench","data":{"bid":67001.5,"ask":67002.0},"from":"feed","seq":'
TAIL=',"ts":1700000000000}'
cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
RAW=$(mktemp)
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null || true; rm -f "$RAW"' EXIT
run() { # label, calls, command...
  local label="$1" n="$2"; shift 2
  local before after
  before=$(cpu_ticks)
  redis-benchmark -p "$PORT" -n "$n" -c 4 -P 16 -q "$@" >/dev/null
  after=$(cpu_ticks)
  # Clock ticks are 1/100 s: microseconds of Redis CPU per call (per
  # message with PER messages a call).
  awk -v t=$((after - before)) -v n="$((n * ${PER:-1}))" -v l="$label" 'BEGIN {printf "%s %.3f\n", l, t * 10000 / n}' \
    | tee -a "$RAW"
}
keys() { # room: the four keys of roomcast_publish
  echo "roomcast:{$1}:seq roomcast:{$1}:epoch roomcast:{$1}:log roomcast:{$1}:members"
}
# The current call, as src/redis/mod.rs `publish` writes it without
# webhooks, with K messages (default 1): fresh epoch, history length, TTL,
# channel, the entries' time (unix ms), K, then K times head, tail, origin.
current() { # label, room, K
  local k="${3:-1}" messages=() i
  for i in $(seq "$k"); do messages+=("$HEAD" "$TAIL" n/1/-); done
  # shellcheck disable=SC2046
  PER=$k run "$1" $((N / k)) FCALL roomcast_publish 4 $(keys "$2") e1 100 300000 \
    "roomcast:{$2}" 1700000000000 "$k" "${messages[@]}"
}
# The baseline's call, one message, as main's nodes made it before batches
# (an older baseline takes the first eight arguments only).
baseline() { # label, room
  # shellcheck disable=SC2046
  run "$1" "$N" FCALL baseline_publish 4 $(keys "$2") "$HEAD" "$TAIL" e1 100 300000 n/1/- \
    "roomcast:{$2}" 1700000000000
}
pass() {
  run publish $((N * 5)) PUBLISH 'roomcast:{bench}' "e1 1 n/1/- ${HEAD}1${TAIL}"
  # shellcheck disable=SC2046
  run fcall-noop "$N" FCALL floor_noop 4 $(keys bench) e1 100 300000 'roomcast:{bench}' \
    1700000000000 1 "$HEAD" "$TAIL" n/1/-
  [ -z "$BASELINE" ] || baseline baseline "base"
  current function "bench"
  # The same rooms with members: their keys are persistent, no PEXPIRE per publish.
  redis-cli -p "$PORT" MSET 'roomcast:{bench}:members' 1 'roomcast:{base}:members' 1 >/dev/null
  [ -z "$BASELINE" ] || baseline baseline-members "base"
  current function-members "bench"
  for k in 4 16 64; do current "batch-$k-members" "bench" "$k"; done
  redis-cli -p "$PORT" DEL 'roomcast:{bench}:members' 'roomcast:{base}:members' >/dev/null
}
for _ in $(seq "$RUNS"); do pass; done
echo "# medians (µs of Redis CPU per call), and x a bare PUBLISH"
awk '{v[$1] = v[$1] " " $2} END {for (l in v) print l v[l]}' "$RAW" | while read -r label values; do
  printf '%s\n' $values | sort -g | awk -v l="$label" '{a[NR] = $1} END {
    m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%s %.3f\n", l, m}'
done | sort | awk '{m[$1] = $2; o[NR] = $1} END {
  for (i = 1; i <= NR; i++) printf "%-18s %7.3f  %5.2fx\n", o[i], m[o[i]], m[o[i]] / m["publish"]}'
echo "# INFO commandstats of one pass per function, room with members (usec_per_call)"
redis-cli -p "$PORT" MSET 'roomcast:{bench}:members' 1 'roomcast:{base}:members' 1 >/dev/null
for f in ${BASELINE:+baseline} current; do
  redis-cli -p "$PORT" CONFIG RESETSTAT >/dev/null
  if [ "$f" = baseline ]; then baseline "$f (again)" base >/dev/null; else current "$f (again)" bench >/dev/null; fi
  echo "$f:"
  redis-cli -p "$PORT" INFO commandstats | tr -d '\r' | grep -v -e '^#' -e config -e '^$' \
    | sed -E 's/^cmdstat_([^:]*):calls=([0-9]+),usec=[0-9]+,usec_per_call=([0-9.]+).*/  \1 calls=\2 usec_per_call=\3/'
done
