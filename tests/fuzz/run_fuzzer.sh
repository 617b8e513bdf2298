#!/usr/bin/env bash
# run_fuzzer.sh NAME BINARY CORPUS_DIR SECONDS MODE_FILE - one fuzz target's
# test (tests/fuzz/BUILD, pw_fuzz_test).
#
# MODE_FILE says how BINARY was built:
#   replay  without libFuzzer (gcc; the normal and ASan builds): every file
#           of the checked-in corpus runs once (replay_main.cc).
#   fuzz    with libFuzzer, ASan and UBSan (bazel test --config=fuzz): the
#           corpus runs once (-runs=0), then the target is fuzzed for
#           SECONDS seconds from it. A crash, leak, timeout or sanitizer
#           finding fails the test; the input that caused it is kept under
#           the test's outputs directory
#           (bazel-testlogs/tests/fuzz/NAME_test/test.outputs/) and its path
#           and bytes are printed.
# A target that needs userfaultfd where there is none exits 77 after saying
# why; the test then prints "NAME: SKIP: why" (scripts/test.sh counts it
# as skipped).
set -uo pipefail

name="$1"
binary="$2"
corpus="$3"
seconds="$4"
mode="$(cat "$5")"

skip_or_fail() {
  local status="$1" log="$2"
  if [[ $status == 77 ]]; then
    echo "$name: SKIP: $(grep -m1 -oE 'SKIP: .*' "$log" | sed 's/^SKIP: //')"
    exit 0
  fi
  echo "$name: FAIL: exit status $status"
  exit 1
}

work="${TEST_TMPDIR:-$(mktemp -d)}"
log="$work/$name.log"

if [[ $mode == replay ]]; then
  echo "$name: replaying $corpus (built without libFuzzer)"
  "$binary" "$corpus" >"$log" 2>&1
  status=$?
  tail -n 40 "$log"
  [[ $status == 0 ]] || skip_or_fail "$status" "$log"
  echo "$name: PASS: corpus replayed"
  exit 0
fi

# libFuzzer: the checked-in corpus first, each input once.
echo "$name: replaying $corpus under libFuzzer"
"$binary" -runs=0 "$corpus" >"$log" 2>&1
status=$?
tail -n 20 "$log"
[[ $status == 0 ]] || skip_or_fail "$status" "$log"

# Then fuzzing from it for a bounded time. New inputs go to a scratch copy
# (the runfiles are read-only); findings to the outputs directory.
out="${TEST_UNDECLARED_OUTPUTS_DIR:-$work}"
mkdir -p "$work/corpus" "$out"
cp "$corpus"/* "$work/corpus/" 2>/dev/null || true
echo "$name: fuzzing for ${seconds}s"
"$binary" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
  -max_len=4096 -print_final_stats=1 -artifact_prefix="$out/" \
  "$work/corpus" >"$log" 2>&1
status=$?
if [[ $status != 0 ]]; then
  tail -n 80 "$log"
  for f in "$out"/crash-* "$out"/leak-* "$out"/timeout-* "$out"/oom-* \
           "$out"/slow-unit-*; do
    [[ -f $f ]] || continue
    echo "$name: reproducer: $(basename "$f") (in bazel-testlogs/tests/fuzz/${name}_test/test.outputs/outputs.zip; its bytes follow)"
    echo "$name: run it with: bazel build --config=fuzz //tests/fuzz:$name && bazel-bin/tests/fuzz/$name <that file>"
    od -An -tx1 -v "$f" | head -n 64
  done
  skip_or_fail "$status" "$log"
fi
grep -E '^(stat::|#[0-9]+ +DONE)' "$log" || tail -n 5 "$log"
echo "$name: PASS: corpus replayed, fuzzed ${seconds}s without a finding"
