#!/usr/bin/env bash
# sizes_test.sh - no file of runtime/ over 800 lines and no function over 80
# (scripts/check_sizes.py), and the check does catch one that is.
set -euo pipefail
runfiles="${RUNFILES_DIR:-${TEST_SRCDIR:?not run under bazel test}}"
ws="$runfiles/pagewire"
check="$ws/scripts/check_sizes.py"

python3 "$check" "$ws" || { echo "sizes_test: FAIL: runtime/ has files or functions too long"; exit 1; }

# A function of 81 lines must be refused and named; one of 80 must not.
tmp="${TEST_TMPDIR:-$(mktemp -d)}/tree"
mkdir -p "$tmp/runtime/fault"
{
  echo "namespace pagewire {"
  echo "void TooLong() {"
  for i in $(seq 1 79); do echo "  Step($i);"; done
  echo "}"
  echo "void JustRight() {"
  for i in $(seq 1 78); do echo "  Step($i);"; done
  echo "}"
  echo "}  // namespace pagewire"
} >"$tmp/runtime/fault/long.cc"
if out="$(python3 "$check" "$tmp" 2>&1)"; then
  echo "$out"
  echo "sizes_test: FAIL: a function of 81 lines was not caught"
  exit 1
fi
grep -q 'runtime/fault/long.cc:2: a function of 81 lines' <<<"$out" ||
  { echo "$out"; echo "sizes_test: FAIL: the long function was not named"; exit 1; }
if grep -q 'JustRight' <<<"$out"; then
  echo "$out"
  echo "sizes_test: FAIL: a function of 80 lines was refused"
  exit 1
fi
echo "sizes_test: PASS"
