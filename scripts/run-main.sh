#!/usr/bin/env bash
# Builds everything and runs Pagewire's main example. On a fresh Debian 12
# machine, as root:   bash scripts/run-main.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
bazel build //...

MAIN=//examples:hello_global
if ! bazel query "$MAIN" >/dev/null 2>&1; then
  echo "run-main: the main example $MAIN is not yet built (no such target)." >&2
  exit 1
fi
exec bazel run "$MAIN" -- "$@"
