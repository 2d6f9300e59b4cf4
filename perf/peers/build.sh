#!/usr/bin/env bash
# Builds every benchmark peer under perf/peers/ and prints how to run each.
#
#   perf/peers/build.sh            # build (idempotent: a second run does no work)
#   perf/peers/build.sh --check    # build, then smoke-test every peer (check.py)
#
# Rust peers: `cargo build --release --locked`, into $CARGO_TARGET_DIR if set,
# else perf/peers/<name>/target. Node peers: `npm ci` when node_modules is
# missing or older than package-lock.json.
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

cat <<OUT
peer-tokio-tungstenite  ${bin[tokio-tungstenite]} PORT
peer-fastwebsockets     ${bin[fastwebsockets]} PORT
peer-floor              ${bin[floor]} PORT
node-ws                 node $here/node/ws-server.js PORT
node-socketio           node $here/node/socketio-server.js PORT
OUT

if (( check )); then
  py=python3
  rc=0
  for p in tokio-tungstenite fastwebsockets floor; do
    $py "$here/check.py" ws -- "${bin[$p]}" || rc=1
  done
  $py "$here/check.py" ws -- node "$here/node/ws-server.js" || rc=1
  $py "$here/check.py" sio -- node "$here/node/socketio-server.js" || rc=1
  exit $rc
fi
