#!/usr/bin/env bash
# Builds the Node binding (napi-rs) and runs its tests on a fresh machine: installs the npm
# packages from the lockfile, builds the native addon (debug), runs `node --test`.
# Idempotent: safe to run again at any time.
#
#   scripts/test-node.sh [--build-only]   (--build-only: install if absent and build; no tests;
#                                          scripts/pg-test.sh uses it)
set -euo pipefail
cd "$(dirname "$0")/../cycles-node"

major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "cycles-node needs Node 20 or newer (found $(node --version))" >&2
  exit 1
fi

# EBADENGINE warnings from some dev packages on Node 20 are harmless.
if [ "${1:-}" = --build-only ]; then
  [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error
  npm run --silent build:debug
  exit 0
fi
# The tests lock a ledger file from another process with the sqlite3 shell.
if ! command -v sqlite3 >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test-node: the sqlite3 shell is not installed and this is not root: install the 'sqlite3' package" >&2
    exit 1
  fi
  echo "test-node: installing the Debian sqlite3 package"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y sqlite3
fi
npm ci --no-audit --no-fund --loglevel=error
npm run --silent build:debug
npm test
