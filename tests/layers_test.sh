#!/usr/bin/env bash
# layers_test.sh - runtime/'s folders include only the layers below them
# (scripts/check_layers.sh), and the check does catch a lower folder that
# includes a higher one.
set -euo pipefail
runfiles="${RUNFILES_DIR:-${TEST_SRCDIR:?not run under bazel test}}"
ws="$runfiles/pagewire"
check="$ws/scripts/check_layers.sh"

bash "$check" "$ws" || { echo "layers_test: FAIL: runtime/ breaks its layering"; exit 1; }

# A fault-layer file that includes a coherence header must be refused, and
# named.
tmp="${TEST_TMPDIR:-$(mktemp -d)}/tree"
mkdir -p "$tmp/runtime/fault" "$tmp/runtime/coherence"
printf '#include "runtime/coherence/coherence.h"\n' >"$tmp/runtime/fault/fault_service.cc"
printf '#include "runtime/fault/fault_service.h"\n' >"$tmp/runtime/coherence/coherence.cc"
if out="$(bash "$check" "$tmp" 2>&1)"; then
  echo "$out"
  echo "layers_test: FAIL: an upward include (fault -> coherence) was not caught"
  exit 1
fi
grep -q 'runtime/fault/fault_service.cc:1: includes runtime/coherence/coherence.h' <<<"$out" ||
  { echo "$out"; echo "layers_test: FAIL: the upward include was not named"; exit 1; }
if grep -q 'runtime/coherence/coherence.cc' <<<"$out"; then
  echo "$out"
  echo "layers_test: FAIL: a downward include (coherence -> fault) was refused"
  exit 1
fi
echo "layers_test: PASS"
