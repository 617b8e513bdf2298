#!/usr/bin/env bash
# Builds and runs every test. On a fresh Debian 12 machine, as root:
#   bash scripts/test.sh [extra bazel test args...]
# Prints a final "N passed, N failed, N skipped" line and exits with Bazel's
# status. Every test runs: results are never taken from Bazel's cache
# (--nocache_test_results). A test that passed only by skipping (a shell
# test's "NAME: SKIP: why", or a GoogleTest binary all of whose cases
# skipped) counts as skipped, not passed, and is listed with its reason;
# GoogleTest cases skipped inside a passing binary are listed too.
#
# Runs in two steps: every test except the soft-RoCE VM suite, then (the VM
# step) the tests tagged "softroce", one after the other:
# //tests/softroce:verbs_suite_vm_test, which boots ONE QEMU guest for every
# verbs test and the verbs benchmark, and //tests/softroce:vm_dies_test, two
# short boots checking that vm-run.sh reports a guest that dies or hangs.
# The final line counts both; the VM step's per-step results (which of its
# steps failed) and the benchmark's figures are printed after it.
#
# A third step (sanitizers) runs every test but the VM suite again, built
# with AddressSanitizer and UndefinedBehaviorSanitizer (--config=asan, in
# its own output tree): any finding fails its test. Those results are
# counted on their own, as "asan //target".
#
# A fourth step (ThreadSanitizer) runs the tests tagged "tsan" (the fault
# service, the completion queue, the transports' TCP cases, and the
# annotations that make Debian's uninstrumented absl::Mutex visible to TSan,
# bazel/tsan/) built with --config=tsan (gcc's TSan, its own output tree;
# only those targets are built): any report fails its test. Counted as
# "tsan //target".
#
# A fifth step (fuzzing) builds the libFuzzer targets of tests/fuzz/ with
# Debian's clang, ASan and UBSan (--config=fuzz, its own output tree) and
# runs each test tagged "fuzz": its checked-in corpus once, then fuzzing
# for a bounded time (20 s each, two at a time). A crash, leak, timeout or
# sanitizer finding fails the test and prints the reproducer's path.
# Counted as "fuzz //target". (Steps 1 and 3 replay the same corpora with
# the gcc builds.)
#
# Environment:
#   PAGEWIRE_SKIP_VM=1   skip the QEMU soft-RoCE suite: the VM step does not
#                        run and says so (also passed to the tests as
#                        --test_env; tests that need the VM check it).
#   PAGEWIRE_SKIP_SANITIZE=1  skip the sanitizer step (its tests are listed
#                        as skipped).
#   PAGEWIRE_SKIP_TSAN=1 skip the ThreadSanitizer step (its tests are listed
#                        as skipped).
#   PAGEWIRE_SKIP_FUZZ=1 skip the fuzzing step (its tests are listed as
#                        skipped).
#   PAGEWIRE_REQUIRE_NETNS=1  the network-namespace tests fail instead of
#                        skipping where namespaces cannot be made (CI sets
#                        it: .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

log="$(mktemp -t pagewire-test.XXXXXX.log)"
asan_log="$(mktemp -t pagewire-asan.XXXXXX.log)"
tsan_log="$(mktemp -t pagewire-tsan.XXXXXX.log)"
fuzz_log="$(mktemp -t pagewire-fuzz.XXXXXX.log)"
trap 'rm -f "$log" "$asan_log" "$tsan_log" "$fuzz_log"' EXIT

args=(--test_output=errors --nocache_test_results)
for v in PAGEWIRE_SKIP_VM PAGEWIRE_REQUIRE_NETNS; do
  if [[ -n "${!v:-}" ]]; then args+=("--test_env=$v=${!v}"); fi
done

# Bazel exits 4 when a tag filter leaves no test to run: not a failure.
run_bazel_test() {
  local st
  set +e
  bazel test //... "${args[@]}" "$@" 2>&1 | tee -a "${RUN_LOG:-$log}"
  st=${PIPESTATUS[0]}
  set -e
  [[ $st == 4 ]] && st=0
  return "$st"
}

# Step 1: everything except the soft-RoCE VM suite.
status=0
run_bazel_test --test_tag_filters=-softroce "$@" || status=$?

# Step 2 (VM): the soft-RoCE suite (tag "softroce"), real verbs on rdma_rxe
# inside ONE QEMU/TCG guest (cluster/softroce/vm-run.sh): one Bazel target
# whose steps are the smoke/perftest baseline, the remote-fault benchmark,
# the transport suite's Verbs cases and every multi-rank DSM test on verbs
# (tests/dsm/dsm_verbs_vm.sh: dsm_test.sh's modes but netns and scale). It counts
# as one test in the summary below and fails if any of its steps fails.
# Also tagged softroce: vm_dies_test (vm-run's exit 125 for a guest that
# panics mid-step, 124 for its watchdog), 45-70 s. The tests are "exclusive",
# so Bazel runs them one at a time: never two VMs at once.
echo
echo "== soft-RoCE VM step (tests tagged softroce; cluster/softroce/README.md)"
vm_note=""
vm_skipped=()
if [[ "${PAGEWIRE_SKIP_VM:-}" == 1 ]]; then
  vm_note="soft-RoCE VM step SKIPPED (PAGEWIRE_SKIP_VM=1): no verbs test ran in a VM"
  echo "$vm_note"
  mapfile -t vm_skipped < <(bazel query 'attr(tags, softroce, tests(//...))' 2>/dev/null)
else
  vm_start=$SECONDS
  vm_status=0
  run_bazel_test --test_tag_filters=softroce "$@" || vm_status=$?
  vm_note="soft-RoCE VM step: bazel status $vm_status in $((SECONDS - vm_start)) s"
  [[ $status == 0 ]] && status=$vm_status
  # Bazel prints only failing tests' output: show which steps of the VM
  # suite ran and how they ended, and the remote-fault benchmark's table
  # (bench/remote_fault_vm.sh, step remote_fault_bench).
  suite_log=bazel-testlogs/tests/softroce/verbs_suite_vm_test/test.log
  if [[ -f "$suite_log" ]]; then
    echo
    echo "== soft-RoCE VM suite, one boot (from $suite_log)"
    grep -E '^vm-run: (step |OK|FAIL|SKIP)' "$suite_log" || echo "(no step results in $suite_log)"
    echo
    echo "== the DSM tests on verbs (step dsm_verbs)"
    grep -E '^dsm_verbs_vm: ' "$suite_log" || echo "(no dsm_verbs_vm lines in $suite_log)"
    echo
    echo "== remote-fault benchmark over verbs (bench/RESULTS.md)"
    grep -E '^remote_fault_vm: [^|]' "$suite_log" || echo "(no remote_fault_vm lines in $suite_log)"
  else
    echo "(no $suite_log: the VM suite did not run)"
  fi
  dies_log=bazel-testlogs/tests/softroce/vm_dies_test/test.log
  echo
  echo "== vm-run reports a dying VM (from $dies_log)"
  grep -E '^//tests/softroce:vm_dies_test: (PASS|FAIL)' "$dies_log" 2>/dev/null ||
    echo "(no result in $dies_log: the test did not run)"
fi

# Step 3 (sanitizers): the same tests as step 1, built with ASan+UBSan.
echo
echo "== sanitizer step (ASan + UBSan, --config=asan)"
asan_note=""
asan_skipped=()
if [[ "${PAGEWIRE_SKIP_SANITIZE:-}" == 1 ]]; then
  asan_note="sanitizer step SKIPPED (PAGEWIRE_SKIP_SANITIZE=1): nothing ran under ASan/UBSan"
  echo "$asan_note"
  mapfile -t asan_skipped < <(bazel query 'tests(//...) except attr(tags, "softroce|no_sanitize", tests(//...))' 2>/dev/null)
else
  asan_start=$SECONDS
  asan_status=0
  # Not the tests tagged no_sanitize (the install test links programs
  # against the installed library with plain compilers).
  RUN_LOG="$asan_log" run_bazel_test --config=asan --test_tag_filters=-softroce,-no_sanitize "$@" || asan_status=$?
  asan_note="sanitizer step: bazel status $asan_status in $((SECONDS - asan_start)) s"
  [[ $status == 0 ]] && status=$asan_status
fi

# Step 4 (ThreadSanitizer): the tests tagged "tsan", built with
# --config=tsan; only those targets and their dependencies are built.
echo
echo "== ThreadSanitizer step (--config=tsan; tests tagged tsan)"
tsan_note=""
tsan_skipped=()
if [[ "${PAGEWIRE_SKIP_TSAN:-}" == 1 ]]; then
  tsan_note="ThreadSanitizer step SKIPPED (PAGEWIRE_SKIP_TSAN=1): nothing ran under TSan"
  echo "$tsan_note"
  mapfile -t tsan_skipped < <(bazel query 'attr(tags, tsan, tests(//...))' 2>/dev/null)
else
  tsan_start=$SECONDS
  tsan_status=0
  RUN_LOG="$tsan_log" run_bazel_test --config=tsan --build_tests_only --test_tag_filters=tsan "$@" || tsan_status=$?
  tsan_note="ThreadSanitizer step: bazel status $tsan_status in $((SECONDS - tsan_start)) s"
  [[ $status == 0 ]] && status=$tsan_status
fi

# Step 5 (fuzzing): the tests tagged "fuzz" (tests/fuzz/), built with
# libFuzzer by clang (--config=fuzz); only those targets are built.
echo
echo "== fuzzing step (libFuzzer + ASan + UBSan, --config=fuzz; tests/fuzz/)"
fuzz_note=""
fuzz_skipped=()
if [[ "${PAGEWIRE_SKIP_FUZZ:-}" == 1 ]]; then
  fuzz_note="fuzzing step SKIPPED (PAGEWIRE_SKIP_FUZZ=1): no fuzz target ran"
  echo "$fuzz_note"
  mapfile -t fuzz_skipped < <(bazel query 'attr(tags, fuzz, tests(//...))' 2>/dev/null)
else
  fuzz_start=$SECONDS
  fuzz_status=0
  set +e
  bazel test --config=fuzz --build_tests_only --test_tag_filters=fuzz \
    "${args[@]}" "$@" //tests/fuzz/... 2>&1 | tee -a "$fuzz_log"
  fuzz_status=${PIPESTATUS[0]}
  set -e
  fuzz_note="fuzzing step: bazel status $fuzz_status in $((SECONDS - fuzz_start)) s"
  # Bazel prints only failing tests' output: show each target's outcome.
  fuzz_testlogs="$(bazel info --config=fuzz bazel-testlogs 2>/dev/null)"
  for f in "$fuzz_testlogs"/tests/fuzz/*_test/test.log; do
    [[ -f $f ]] && grep -hE '^[a-z_]+_fuzzer: (PASS|FAIL|SKIP|reproducer)' "$f"
  done
  [[ $status == 0 ]] && status=$fuzz_status
fi

# Bazel's per-target summary lines look like
#   //proto:control_plane_proto_test                PASSED in 0.1s
#   //tests/install:install_test                     FAILED in 0.2s
#   //x:y                                            TIMEOUT in 300.0s
# A PASSED target whose log says it skipped counts as skipped.
passed=0
failed=0
skipped=0
skipped_lines=()
partial_lines=()
for target in "${vm_skipped[@]}"; do
  skipped=$((skipped + 1))
  skipped_lines+=("  $target: not run (PAGEWIRE_SKIP_VM=1)")
done
for target in "${asan_skipped[@]}"; do
  skipped=$((skipped + 1))
  skipped_lines+=("  asan $target: not run (PAGEWIRE_SKIP_SANITIZE=1)")
done
for target in "${tsan_skipped[@]}"; do
  skipped=$((skipped + 1))
  skipped_lines+=("  tsan $target: not run (PAGEWIRE_SKIP_TSAN=1)")
done
for target in "${fuzz_skipped[@]}"; do
  skipped=$((skipped + 1))
  skipped_lines+=("  fuzz $target: not run (PAGEWIRE_SKIP_FUZZ=1)")
done
# count_results LOG TESTLOGS LABEL: adds LOG's results to the counts; skip
# reasons come from the test logs under TESTLOGS.
count_results() {
  local run_log="$1" testlogs="$2" label="$3" target logf why
  while read -r target; do
    logf="$testlogs/${target#//}"
    logf="${logf/://}/test.log"
    why=""
    if [[ -f "$logf" ]]; then
      why="$(grep -m1 -E '^[^ ]+: SKIP: ' "$logf" | sed -E 's/^[^ ]+: SKIP: //' || true)"
      if [[ -z "$why" ]] && grep -qE '^\[  PASSED  \] 0 tests' "$logf" &&
         grep -qE '^\[  SKIPPED \] [0-9]+ test' "$logf"; then
        # GoogleTest prints the skip's reason just before the case's result.
        why="every case skipped: $(grep -m1 -B1 -E '^\[  SKIPPED \] [A-Za-z]' "$logf" | head -1)"
      fi
    fi
    if [[ -n "$why" ]]; then
      skipped=$((skipped + 1))
      skipped_lines+=("  $label$target: $why")
      continue
    fi
    passed=$((passed + 1))
    if [[ -f "$logf" ]]; then
      while read -r case_line; do
        partial_lines+=("  $label$target: ${case_line#\[  SKIPPED \] }")
      done < <(grep -E '^\[  SKIPPED \] [A-Za-z_]+\.[A-Za-z_]+' "$logf" | sort -u || true)
    fi
  done < <(grep -oE '^//[^ ]+ +PASSED( |$)' "$run_log" | awk '{print $1}' | sort -u)
  failed=$((failed + $(grep -cE '^//[^ ]+ +(FAILED|TIMEOUT|FLAKY|NO STATUS|FAILED TO BUILD|INCOMPLETE)( |$)' "$run_log" || true)))
}
count_results "$log" "$(bazel info bazel-testlogs 2>/dev/null)" ""
if [[ -s "$asan_log" ]]; then
  count_results "$asan_log" "$(bazel info --config=asan bazel-testlogs 2>/dev/null)" "asan "
fi
if [[ -s "$tsan_log" ]]; then
  count_results "$tsan_log" "$(bazel info --config=tsan bazel-testlogs 2>/dev/null)" "tsan "
fi
if [[ -s "$fuzz_log" ]]; then
  count_results "$fuzz_log" "$(bazel info --config=fuzz bazel-testlogs 2>/dev/null)" "fuzz "
fi
echo
if [[ ${#skipped_lines[@]} -gt 0 ]]; then
  echo "== skipped tests (not counted as passed)"
  printf '%s\n' "${skipped_lines[@]}"
fi
if [[ ${#partial_lines[@]} -gt 0 ]]; then
  echo "== skipped cases inside passing tests"
  printf '%s\n' "${partial_lines[@]}"
fi
[[ -n "$vm_note" ]] && echo "$vm_note"
[[ -n "$asan_note" ]] && echo "$asan_note"
[[ -n "$tsan_note" ]] && echo "$tsan_note"
[[ -n "$fuzz_note" ]] && echo "$fuzz_note"
echo "${passed} passed, ${failed} failed, ${skipped} skipped"
exit "$status"
