#!/usr/bin/env bash
# The project's test command: build, format and lint checks, Rust unit and
# integration tests, the Python client tests, and Autobahn (when the shared
# suite is beside the repo), which runs in the background from the build on.
# Runs from any directory.
#
#   scripts/test.sh              everything
#   SKIP_AUTOBAHN=1 scripts/test.sh
#
# The deploy files of deploy/ are checked by scripts/check-deploy.sh.
#
# First the machine set-up, scripts/setup.sh (a no-op once done), which
# installs what the tests need and gives the paths (ROOT, VENV, BROWSER_DIR)
# and `step`. Honours CARGO_TARGET_DIR.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
setup
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

# Runs Autobahn's fuzzingclient against `roomcast serve --echo --compression
# on` over SCHEME: `ws` runs every case 1-13 (12 and 13 are
# permessage-deflate), `wss` (TLS with a throwaway certificate, through the
# runner's own TLS client) the RFC 6455 cases 1-10. Fails on any FAILED,
# NON-STRICT, UNIMPLEMENTED or MISSING case (INFORMATIONAL is Autobahn's own
# grade for cases with no right answer). The deflate cases take about 6
# minutes against the debug binary, nearly all of it in the Python client
# (it masks and compresses 1000 messages of up to 128 KiB per case), so the
# runs go in the background, niced, while the other steps run; the server's
# PID is in $LOGS/autobahn-SCHEME.pid for cleanup.
autobahn() {
  local scheme="$1" bin="$TARGET/debug/roomcast" secret="autobahn-$RANDOM$RANDOM" log out="$TARGET/autobahn-$1"
  local tls_flags=()
  log="$(mktemp)"
  local cases=()
  if [ "$scheme" = wss ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
      -keyout "$log.key" -out "$log.crt" 2>/dev/null || return 1
    tls_flags=(--tls-cert "$log.crt" --tls-key "$log.key")
  else
    cases=(--with-compression)
  fi
  "$bin" serve --echo --compression on --max-message-size 16MiB --max-write-buffer 16MiB --bind 127.0.0.1:0 \
      --jwt-secret "$secret" --log-level warn "${tls_flags[@]}" >"$log" 2>&1 &
  local pid=$!
  echo "$pid" >"$LOGS/autobahn-$scheme.pid"
  local addr=""
  for _ in $(seq 1 200); do
    addr="$(sed -n 's/^roomcast listening on //p' "$log" | head -n1)"
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  if [ -z "$addr" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "test.sh: roomcast did not start for Autobahn:" >&2
    cat "$log" >&2
    return 1
  fi
  local jwt
  jwt="$("$bin" token --secret "$secret" --sub autobahn --ttl 3600)" || return 1
  set +e
  bash "$ROOT/../shared/autobahn/run.sh" "${cases[@]}" --timeout 1200 "$scheme://$addr/echo?token=$jwt" "$out" \
      >"$out.txt" 2>&1
  set -e
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$log" "$log.key" "$log.crt" "$LOGS/autobahn-$scheme.pid"
  local last
  last="$(grep '^autobahn: .* of [0-9]*$' "$out.txt" | tail -n1)"
  echo "$scheme ${last:-autobahn: no summary}" >"$LOGS/autobahn-$scheme.result"
  if [ -z "$last" ] || ! grep -Eq ' 0 NON-STRICT, [0-9]+ INFORMATIONAL, 0 UNIMPLEMENTED, 0 FAILED, 0 MISSING of ' <<<"$last"; then
    echo "test.sh: Autobahn over $scheme is not clean: ${last:-no summary line}" >&2
    return 1
  fi
}

# Waits for the background Autobahn run, shows its report and passes on its status.
autobahn_wait() {
  local status=0
  wait "$AUTOBAHN_JOB" || status=$?
  AUTOBAHN_JOB=""
  cat "$TARGET/autobahn-ws.txt" "$TARGET/autobahn-wss.txt" 2>/dev/null || true
  AUTOBAHN_RESULT="autobahn: $(cat "$LOGS/autobahn-ws.result" 2>/dev/null || echo "ws: no summary"); $(cat "$LOGS/autobahn-wss.result" 2>/dev/null || echo "wss: no summary")"
  return $status
}

step "cargo build"
cargo build --quiet

LOGS="$(mktemp -d)"
AUTOBAHN_JOB=""
REDIS_PID=""
SENTINEL_PIDS=()
RCLUSTER_PIDS=()
# The processes this script starts in the background: the Autobahn run and
# its server, the Redis of the cluster pass, the master, replica and
# Sentinels of the Sentinel pass, and the nodes of the Redis Cluster pass.
cleanup() {
  [ -n "$AUTOBAHN_JOB" ] && kill "$AUTOBAHN_JOB" 2>/dev/null
  for pidfile in "$LOGS"/autobahn-*.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
  done
  [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null
  local pid
  for pid in "${SENTINEL_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${RCLUSTER_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  rm -rf "$LOGS"
}

trap cleanup EXIT
AUTOBAHN_RESULT="autobahn: skipped"
if [ "${SKIP_AUTOBAHN:-0}" = 1 ]; then
  step "autobahn skipped (SKIP_AUTOBAHN=1)"
elif [ -f "$ROOT/../shared/autobahn/run.sh" ]; then
  step "autobahn started in the background (ws: cases 1-13; then wss: cases 1-10)"
  autobahn_bg() {
    renice -n 10 -p $BASHPID >/dev/null 2>&1 || true
    local status=0
    autobahn ws || status=1
    autobahn wss || status=1
    return $status
  }
  autobahn_bg &
  AUTOBAHN_JOB=$!
else
  step "autobahn skipped (no ../shared/autobahn/run.sh)"
fi

FAILED_STEPS=()
# Runs a check; a failure is recorded and the remaining checks still run.
check() {
  local name="$1"; shift
  step "$name"
  if ! "$@"; then
    FAILED_STEPS+=("$name")
  fi
}

# The one-process suites of rooms, history, presence, direct messages,
# events, POST /publish, permissions and maxRate again, each server a cluster of two
# nodes on one Redis (tests/common: ROOMCAST_TEST_REDIS), so publishers and
# members land on different nodes. The suites are modules of tests/it,
# selected by module path: `rooms::`, not `rooms`, which would also take
# `cluster::rooms_spread_over_two_redis_servers_by_name` (a filter matches
# any part of a test's name).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
CLUSTER_SUITES=(rooms:: history:: presence:: direct:: events:: publish:: permissions:: volatile:: max_rate:: delta::)
cluster_pass() {
  local port
  port="$(free_port)"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
  local status=0
  ROOMCAST_TEST_REDIS="redis://127.0.0.1:$port" cargo test --quiet --test it -- --test-threads=2 \
    "${CLUSTER_SUITES[@]}" 2>&1 | tee "$LOGS/cluster" || status=1
  kill "$REDIS_PID" 2>/dev/null; wait "$REDIS_PID" 2>/dev/null || true
  REDIS_PID=""
  return $status
}

# The same suites once more with the nodes finding their Redis through
# Sentinel (`redis+sentinel://`): a master, one replica and three Sentinels
# (quorum 2), each Sentinel's configuration in $LOGS/sentinel-N/. The
# Sentinels are waited for 10 s at most, the suites 5 minutes at most.
sentinel_pass() {
  local master replica port i pid status=0 hosts=()
  master="$(free_port)"; replica="$(free_port)"
  redis-server --port "$master" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
  SENTINEL_PIDS+=($!)
  redis-server --port "$replica" --bind 127.0.0.1 --save '' --appendonly no \
    --replicaof 127.0.0.1 "$master" >/dev/null 2>&1 &
  SENTINEL_PIDS+=($!)
  for i in 1 2 3; do
    port="$(free_port)"
    hosts+=("127.0.0.1:$port")
    mkdir -p "$LOGS/sentinel-$i"
    printf '%s\n' "port $port" "bind 127.0.0.1" "dir $LOGS/sentinel-$i" \
      "sentinel monitor roomcast 127.0.0.1 $master 2" \
      "sentinel down-after-milliseconds roomcast 1000" \
      "sentinel failover-timeout roomcast 5000" >"$LOGS/sentinel-$i/sentinel.conf"
    redis-server "$LOGS/sentinel-$i/sentinel.conf" --sentinel >/dev/null 2>&1 &
    SENTINEL_PIDS+=($!)
  done
  for port in "${hosts[@]}"; do
    for _ in $(seq 200); do
      redis-cli -p "${port#*:}" sentinel get-master-addr-by-name roomcast 2>/dev/null | grep -q . && break
      sleep 0.05
    done
  done
  local url
  url="redis+sentinel://$(IFS=,; echo "${hosts[*]}")/roomcast"
  ROOMCAST_TEST_REDIS="$url" timeout 300 cargo test --quiet --test it -- --test-threads=2 \
    "${CLUSTER_SUITES[@]}" 2>&1 | tee "$LOGS/sentinel" || status=1
  for pid in "${SENTINEL_PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; done
  SENTINEL_PIDS=()
  return $status
}
# The same suites on a Redis Cluster of three masters (redis+cluster://,
# sharded pub/sub), each node in a directory of its own under $LOGS: the
# cluster is waited for 10 s at most, the suites 5 minutes at most.
rcluster_pass() {
  local ports=() port seeds="" pid status=0
  for _ in 1 2 3; do
    # A node's cluster bus listens on its port + 10000: both must be free.
    port="$(python3 -c '
import socket
while True:
    s, b = socket.socket(), socket.socket()
    s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    try:
        b.bind(("127.0.0.1", p + 10000)); print(p); break
    except (OSError, OverflowError):
        pass
')"
    mkdir -p "$LOGS/rcluster-nodes/$port"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$LOGS/rcluster-nodes/$port" \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 1000 \
      --cluster-require-full-coverage no >/dev/null 2>&1 &
    RCLUSTER_PIDS+=($!)
    ports+=("$port")
    seeds="$seeds${seeds:+,}127.0.0.1:$port"
  done
  for port in "${ports[@]}"; do
    for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
  done
  redis-cli --cluster create ${seeds//,/ } --cluster-replicas 0 --cluster-yes >"$LOGS/rcluster-create.log" 2>&1 || status=1
  for port in "${ports[@]}"; do
    for _ in $(seq 200); do
      redis-cli -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' && break; sleep 0.05
    done
  done
  [ "$status" = 0 ] && { ROOMCAST_TEST_REDIS="redis+cluster://$seeds" timeout 300 cargo test --quiet --test it -- --test-threads=2 \
    "${CLUSTER_SUITES[@]}" 2>&1 | tee "$LOGS/rcluster" || status=1; }
  for pid in "${RCLUSTER_PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; done
  RCLUSTER_PIDS=()
  return $status
}
: >"$LOGS/cargo"; : >"$LOGS/pytest"; : >"$LOGS/cluster"; : >"$LOGS/sentinel"; : >"$LOGS/rcluster"; : >"$LOGS/node"; : >"$LOGS/browser"
: >"$LOGS/drills"; : >"$LOGS/deploy"; : >"$LOGS/fuzz"; : >"$LOGS/million"

check "cargo fmt --check" cargo fmt --all -- --check
check "cargo clippy" cargo clippy --quiet --all-targets -- -D warnings
# Each integration test starts its own server; two at a time suits 2 cores.
# The fuzz targets only replay their corpus here; the next step fuzzes.
check "cargo test" bash -c 'set -o pipefail; ROOMCAST_FUZZ_SECS=0 cargo test --quiet --no-fail-fast -- --test-threads=2 2>&1 | tee "$1"' _ "$LOGS/cargo"
# Every parser's fuzz target for a bounded time: 13 targets x 12 s, two at a
# time, about 80 s. In debug: a release build runs 5-16 times the executions
# but costs about 4 minutes of building on a fresh machine.
check "fuzz targets (tests/fuzz)" bash -c 'set -o pipefail; ROOMCAST_FUZZ_SECS="${ROOMCAST_FUZZ_SECS:-12}" cargo test --test fuzz -- --nocapture --test-threads=2 2>&1 | tee "$1"' _ "$LOGS/fuzz"
check "cargo test (cluster of two nodes)" cluster_pass
check "cargo test (cluster of two nodes, Redis through Sentinel)" sentinel_pass
check "cargo test (cluster of two nodes on a Redis Cluster)" rcluster_pass
# The fault drills (tests/drills), one at a time, at their quick size.
check "fault drills" bash -c 'set -o pipefail; cargo test --quiet --test drills -- --ignored --nocapture --test-threads=1 2>&1 | tee "$1"' _ "$LOGS/drills"
# The client's unit tests, and the client under Node against the binary.
check "node --test (clients/js)" bash -c 'set -o pipefail; cd clients/js && ROOMCAST_BIN="$2" FOSSIL_DELTA="$3" node --test test/ 2>&1 | tee "$1"' \
  _ "$LOGS/node" "$TARGET/debug/roomcast" "$ORACLE_DIR/node_modules/fossil-delta/fossil-delta.js"
check "browser tests (Chromium)" bash -c 'set -o pipefail; SCREENSHOT_DIR="$4" ROOMCAST_BIN="$1" PLAYWRIGHT_CORE="$2" CHROMIUM="$(command -v chromium)" node --test tests/browser/ 2>&1 | tee "$3"' \
  _ "$TARGET/debug/roomcast" "$BROWSER_DIR/node_modules/playwright-core/index.mjs" "$LOGS/browser" "$TARGET"
check "pytest" bash -c 'set -o pipefail; ROOMCAST_BIN="$1" "$2" -m pytest -q -p no:cacheprovider tests/python 2>&1 | tee "$3"' \
  _ "$TARGET/debug/roomcast" "$VENV/bin/python" "$LOGS/pytest"
check "deploy files (scripts/check-deploy.sh)" bash -c 'set -o pipefail; ROOMCAST_BIN="$1" DEPLOY_VENV="$2" scripts/check-deploy.sh 2>&1 | tee "$3"' \
  _ "$TARGET/debug/roomcast" "$VENV" "$LOGS/deploy"

# perf/million.sh in small: 20,000 connections held by two nodes on one
# Redis, each in a room of 1,000 and in one room of all, with messages into
# both (about 25 s with the debug build): every connection held, no error,
# every message delivered to every member.
check "perf/million.sh (CONNS=20000)" bash -c 'set -o pipefail; CONNS=20000 HOLD=2s EXPECT_ALL=1 KEEP=0 ROOMCAST_BIN="$1" perf/million.sh 2>&1 | tee "$2"' \
  _ "$TARGET/debug/roomcast" "$LOGS/million"

if [ -n "$AUTOBAHN_JOB" ]; then
  check "autobahn (waiting for the background runs)" autobahn_wait
fi

# Totals over every `test result:` line of cargo, pytest's last line, node's
# counts and check-deploy's last line (one per deploy check).
count() { { grep -Eo "[0-9]+ $1" || true; } | awk '{n += $1} END {print n + 0}'; }
total() {
  local node
  node=$(sed -n "s/^# \(pass\|fail\) \([0-9]*\)$/\2 \1/p" "$LOGS/node" "$LOGS/browser" | sed 's/ pass$/ passed/; s/ fail$/ failed/' | count "$1")
  echo $(( $(grep -h '^test result:' "$LOGS/cargo" "$LOGS/fuzz" "$LOGS/cluster" "$LOGS/sentinel" "$LOGS/rcluster" "$LOGS/drills" | count "$1") \
    + $(tail -n1 "$LOGS/pytest" | count "$1") + $(tail -n1 "$LOGS/deploy" | count "$1") + node ))
}
echo
echo "test.sh: $AUTOBAHN_RESULT; took $(( $(date +%s) - start ))s"
if [ "${#FAILED_STEPS[@]}" -gt 0 ]; then
  echo "test.sh: FAILED: ${FAILED_STEPS[*]}"
fi
failed=$(total failed)
# A step that failed without failing tests (fmt, clippy, a build error) counts as one.
[ "$failed" -eq 0 ] && failed=${#FAILED_STEPS[@]}
echo "summary: $(total passed) passed, $failed failed"
[ "${#FAILED_STEPS[@]}" -eq 0 ]
