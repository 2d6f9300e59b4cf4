#!/usr/bin/env bash
# Builds peer-uws (peer.cpp) against uWebSockets and uSockets source trees.
#
#   perf/peers/uws/build.sh UWS_DIR USOCKETS_DIR
#   UWS_DIR=... USOCKETS_DIR=... perf/peers/uws/build.sh
#
# UWS_DIR is a uWebSockets checkout (its src/ holds App.h), USOCKETS_DIR the
# uSockets checkout it pins as its submodule (src/libusockets.h). Nothing is
# fetched: perf/peers/README.md says where the sources come from and which
# commits are measured. The binary is $CARGO_TARGET_DIR/uws/peer-uws if
# CARGO_TARGET_DIR is set, else perf/peers/uws/build/peer-uws. It prints the
# binary's path. Compiler: $CC (cc) for uSockets, $CXX (g++) for the rest.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
uws=${1:-${UWS_DIR:-}}
usockets=${2:-${USOCKETS_DIR:-}}
if [[ -z $uws || -z $usockets ]]; then
  echo "usage: $0 UWS_DIR USOCKETS_DIR (or set UWS_DIR and USOCKETS_DIR)" >&2
  exit 2
fi
[[ -f $uws/src/App.h ]] || { echo "$uws/src/App.h not found" >&2; exit 2; }
[[ -f $usockets/src/libusockets.h ]] || { echo "$usockets/src/libusockets.h not found" >&2; exit 2; }

out=${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/uws}
out=${out:-$here/build}
mkdir -p "$out/obj"
CC=${CC:-cc}
CXX=${CXX:-g++}
# No TLS, no zlib (compression stays off), epoll (uSockets' default on Linux).
flags=(-O3 -march=native -flto -DLIBUS_NO_SSL -g1)

# Rebuild only when an input is newer than the binary.
bin=$out/peer-uws
if [[ -x $bin ]] && [[ -z $(find "$here/peer.cpp" "$here/build.sh" "$uws/src" "$usockets/src" \
                             -newer "$bin" -print -quit) ]]; then
  echo "$bin up to date" >&2
  echo "$bin"
  exit 0
fi

objs=()
for c in "$usockets"/src/*.c "$usockets"/src/eventing/*.c "$usockets"/src/crypto/*.c; do
  o=$out/obj/$(basename "${c%.c}").o
  "$CC" "${flags[@]}" -std=c11 -I"$usockets/src" -c "$c" -o "$o"
  objs+=("$o")
done
"$CXX" "${flags[@]}" -std=c++20 -DUWS_NO_ZLIB -I"$uws/src" -I"$usockets/src" \
  "$here/peer.cpp" "${objs[@]}" -o "$bin"
echo "$bin"
