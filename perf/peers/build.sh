#!/usr/bin/env bash
# Builds every benchmark peer under perf/peers/ and prints how to run each.
#
#   perf/peers/build.sh            # build (idempotent: a second run does no work)
#   perf/peers/build.sh --check    # build, then smoke-test every peer (check.py)
#
# Rust peers: `cargo build --release --locked`, into $CARGO_TARGET_DIR if set,
# else perf/peers/<name>/target. Node peers: `npm ci` when node_modules is
# missing or older than package-lock.json. uWebSockets (C++): only when
# UWS_DIR and USOCKETS_DIR name its sources (perf/peers/uws/build.sh), else
# skipped with a message.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
check=0
[[ ${1:-} == --check ]] && check=1

declare -A bin
for p in tokio-tungstenite fastwebsockets floor; do
  target=${CARGO_TARGET_DIR:-$here/$p/target}
  echo "== cargo build --release ($p, target $target)" >&2
  (cd "$here/$p" && CARGO_TARGET_DIR=$target cargo build --release --locked)
  bin[$p]=$target/release/peer-$p
done

echo "== npm ci (node)" >&2
if [[ ! -f $here/node/node_modules/.package-lock.json ||
      $here/node/package-lock.json -nt $here/node/node_modules/.package-lock.json ]]; then
  (cd "$here/node" && npm ci --no-audit --no-fund)
else
  echo "node_modules up to date" >&2
fi

bin[uws]=""
if [[ -n ${UWS_DIR:-} && -n ${USOCKETS_DIR:-} ]]; then
  echo "== perf/peers/uws/build.sh (uWebSockets $UWS_DIR, uSockets $USOCKETS_DIR)" >&2
  bin[uws]=$("$here/uws/build.sh" "$UWS_DIR" "$USOCKETS_DIR")
else
  echo "== uws skipped: set UWS_DIR and USOCKETS_DIR to the uWebSockets and uSockets sources (perf/peers/README.md)" >&2
fi

cat <<OUT
peer-tokio-tungstenite  ${bin[tokio-tungstenite]} PORT
peer-fastwebsockets     ${bin[fastwebsockets]} PORT
peer-floor              ${bin[floor]} PORT
node-ws                 node $here/node/ws-server.js PORT
node-socketio           node $here/node/socketio-server.js PORT
OUT
if [[ -n ${bin[uws]} ]]; then echo "peer-uws                ${bin[uws]} PORT"; fi

if (( check )); then
  py=python3
  rc=0
  for p in tokio-tungstenite fastwebsockets floor; do
    $py "$here/check.py" ws -- "${bin[$p]}" || rc=1
  done
  $py "$here/check.py" ws -- node "$here/node/ws-server.js" || rc=1
  $py "$here/check.py" sio -- node "$here/node/socketio-server.js" || rc=1
  if [[ -n ${bin[uws]} ]]; then
    $py "$here/check.py" ws -- "${bin[uws]}" || rc=1
  fi
  exit $rc
fi
