#!/usr/bin/env bash
# vm_dies_test.sh - checks that cluster/softroce/vm-run.sh reports a guest
# that stops without reporting, instead of passing or hanging. Two short
# boots, one after the other (never two VMs at once):
#   1. crash: a job whose step 2 panics the guest kernel through
#      /proc/sysrq-trigger ("c"; with panic=-1 and -no-reboot QEMU exits).
#      vm-run must exit 125, print "vm-run: FAIL: the VM stopped ... during
#      step crash (2/3), without reporting a status", report step 1 PASS,
#      step 2 DID NOT FINISH and step 3 NOT RUN (step 3 leaves a marker file
#      if it ever runs: there must be none).
#   2. hang: a job whose step 2 sleeps 1000 s under a small --timeout-s.
#      vm-run's harness watchdog must kill QEMU: exit 124, "vm-run: FAIL:
#      harness watchdog killed the VM after N s (--timeout-s) during step
#      hang (2/3)", step 3 NOT RUN.
# PAGEWIRE_SKIP_VM=1 turns the test into a SKIP that passes.
set -euo pipefail

name="${TEST_TARGET:-vm_dies_test}"
if [[ "${PAGEWIRE_SKIP_VM:-}" == 1 ]]; then
  echo "$name: SKIP: PAGEWIRE_SKIP_VM=1, vm-run's report of a dying VM was not checked"
  exit 0
fi

runfiles="${RUNFILES_DIR:-${TEST_SRCDIR:?run me with bazel test}}"
vm_run="$runfiles/${TEST_WORKSPACE:-pagewire}/cluster/softroce/vm-run.sh"
tmp="${TEST_TMPDIR:?}"
[[ -f "$vm_run" ]] || { echo "$name: FAIL: $vm_run missing from the runfiles"; exit 1; }

# The crash run's watchdog only bounds a guest that fails to crash and
# wedges instead; it sits far above the ~10 s the run takes.
readonly CRASH_WATCHDOG_S=300
# The hang run's watchdog must fire after the guest has booted and entered
# the hanging step, or the FAIL line cannot name that step. Boot to the
# first step takes ~6-10 s under TCG on an idle machine, more while the
# other core builds: allow twice the crash run's whole time (which is boot
# plus two short steps) and this margin on top.
readonly HANG_MARGIN_S=20

failures=0
check() { # DESCRIPTION COMMAND...: one assertion, reported either way
  local what=$1
  shift
  if "$@"; then
    echo "$name: ok: $what"
  else
    echo "$name: FAIL: $what"
    failures=$((failures + 1))
  fi
}
has_line() { grep -qF -- "$2" "$1"; }
lacks_file() { [[ ! -e "$1" ]]; }

# run_vm LABEL WATCHDOG_S JOB_TEXT: runs vm-run on the job, keeping its
# output in $tmp/LABEL.log and its run files in $tmp/LABEL-out; sets
# vm_status and vm_secs.
run_vm() {
  local label=$1 watchdog=$2 job="$tmp/$1.job" t0=$SECONDS
  printf '%s\n' "$3" >"$job"
  echo "$name: == $label: vm-run --timeout-s $watchdog"
  set +e
  bash "$vm_run" --out-dir "$tmp/$label-out" --timeout-s "$watchdog" --job "$job" 2>&1 |
    tee "$tmp/$label.log"
  vm_status=${PIPESTATUS[0]}
  set -e
  vm_secs=$((SECONDS - t0))
  echo "$name: $label: vm-run exit status $vm_status after $vm_secs s"
}

# --- 1. the guest kernel panics during a step --------------------------------
# Writing to /proc/sysrq-trigger is allowed to root whatever kernel.sysrq
# says (that sysctl gates only the keyboard); "c" panics inside the write,
# so nothing after it runs unless the crash did not happen.
# shellcheck disable=SC2016 # $PAGEWIRE_VM_OUT is the guest's, expanded there
run_vm crash "$CRASH_WATCHDOG_S" '[first] echo first step ran
[crash] echo c >/proc/sysrq-trigger; echo "sysrq-trigger c returned: the guest did not crash"
[after] touch "$PAGEWIRE_VM_OUT/after-ran"'
crash_secs=$vm_secs
log="$tmp/crash.log"
check "crash: vm-run exits 125 (got $vm_status)" test "$vm_status" -eq 125
check "crash: the FAIL line names step crash (2/3)" \
  grep -qE '^vm-run: FAIL: the VM stopped \(qemu exit status [0-9]+\) after [0-9.]+ s during step crash \(2/3\), without reporting a status' "$log"
check "crash: step 1 is reported PASS" has_line "$log" "vm-run: step 1/3 first: PASS"
check "crash: step 2 is reported DID NOT FINISH" has_line "$log" "vm-run: step 2/3 crash: DID NOT FINISH"
check "crash: step 3 is reported NOT RUN" has_line "$log" "vm-run: step 3/3 after: NOT RUN"
check "crash: step 3 really did not run" lacks_file "$tmp/crash-out/artifacts/after-ran"
check "crash: vm-run shows the panic from the console" has_line "$log" "sysrq_handle_crash"

# --- 2. a step hangs: the harness watchdog --------------------------------------
hang_watchdog=$((2 * crash_secs + HANG_MARGIN_S))
# shellcheck disable=SC2016 # as above
run_vm hang "$hang_watchdog" '[first] echo first step ran
[hang] sleep 1000
[after] touch "$PAGEWIRE_VM_OUT/after-ran"'
log="$tmp/hang.log"
check "hang: vm-run exits 124 (got $vm_status)" test "$vm_status" -eq 124
check "hang: the FAIL line names the watchdog and step hang (2/3)" \
  has_line "$log" "vm-run: FAIL: harness watchdog killed the VM after $hang_watchdog s (--timeout-s) during step hang (2/3); it never reported a status"
check "hang: step 1 is reported PASS" has_line "$log" "vm-run: step 1/3 first: PASS"
check "hang: step 2 is reported DID NOT FINISH" has_line "$log" "vm-run: step 2/3 hang: DID NOT FINISH"
check "hang: step 3 is reported NOT RUN" has_line "$log" "vm-run: step 3/3 after: NOT RUN"
check "hang: step 3 really did not run" lacks_file "$tmp/hang-out/artifacts/after-ran"
check "hang: the watchdog fired on time (${vm_secs} s, bound ${hang_watchdog} s + 10 s kill grace)" \
  test "$vm_secs" -le $((hang_watchdog + 15))

if ((failures > 0)); then
  echo "$name: FAIL: $failures check(s) failed (vm-run's output is above)"
  exit 1
fi
echo "$name: PASS: a crashed guest is exit 125 naming its step, a hung one exit 124 (runs took $crash_secs s and $vm_secs s)"
