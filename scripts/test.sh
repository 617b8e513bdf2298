#!/usr/bin/env bash
# Builds and runs every test. On a fresh Debian 12 machine, as root:
#   bash scripts/test.sh [extra bazel test args...]
# Prints a final "N passed, N failed" line and exits with Bazel's status.
#
# Environment:
#   PAGEWIRE_SKIP_VM=1   skip the QEMU soft-RoCE suite (passed through to the
#                        tests as --test_env; tests that need the VM check it).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

log="$(mktemp -t pagewire-test.XXXXXX.log)"
trap 'rm -f "$log"' EXIT

args=(--test_output=errors)
if [[ -n "${PAGEWIRE_SKIP_VM:-}" ]]; then
  args+=("--test_env=PAGEWIRE_SKIP_VM=$PAGEWIRE_SKIP_VM")
fi

set +e
bazel test //... "${args[@]}" "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# Bazel's per-target summary lines look like
#   //proto:control_plane_proto_test        (cached) PASSED in 0.1s
#   //tests/install:install_test                     FAILED in 0.2s
#   //x:y                                            TIMEOUT in 300.0s
passed=$(grep -cE '^//[^ ]+ +(\(cached\) +)?PASSED( |$)' "$log" || true)
failed=$(grep -cE '^//[^ ]+ +(\(cached\) +)?(FAILED|TIMEOUT|FLAKY|NO STATUS|FAILED TO BUILD|INCOMPLETE)( |$)' "$log" || true)
echo
echo "${passed} passed, ${failed} failed"
exit "$status"
