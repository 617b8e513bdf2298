#!/usr/bin/env bash
# softroce_test.sh - the test driver behind softroce_test() (softroce.bzl):
# boots ONE soft-RoCE VM with cluster/softroce/vm-run.sh and runs every
# named step in it, in order; the test fails with the first failing step's
# status (vm-run names the failing steps, or the step a dying VM was in).
# Arguments (written by the macro):
#   --timeout-s N         the VM's harness watchdog
#   --env NAME=VALUE      environment for every step (repeatable)
#   --step NAME LINE      one step: a bash command line (shell syntax)
# PAGEWIRE_SKIP_VM=1 turns the test into a SKIP that passes.
set -euo pipefail

name="${TEST_TARGET:-softroce_test}"
if [[ "${PAGEWIRE_SKIP_VM:-}" == 1 ]]; then
  echo "$name: SKIP: PAGEWIRE_SKIP_VM=1, the soft-RoCE VM suite was not run"
  exit 0
fi

runfiles="${RUNFILES_DIR:-${TEST_SRCDIR:?run me with bazel test}}"
ws="$runfiles/${TEST_WORKSPACE:-pagewire}"
vm_run="$ws/cluster/softroce/vm-run.sh"
[[ -f "$vm_run" ]] || { echo "$name: FAIL: $vm_run missing from the runfiles" >&2; exit 1; }

opts=()
job="${TEST_TMPDIR:?}/softroce.job"
: >"$job"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --timeout-s|--env)
      [[ $# -ge 2 ]] || { echo "$name: $1 needs a value" >&2; exit 2; }
      opts+=("$1" "$2")
      shift 2
      ;;
    --step)
      [[ $# -ge 3 ]] || { echo "$name: --step needs NAME and LINE" >&2; exit 2; }
      # vm-run's job-file syntax for a named step.
      printf '[%s] %s\n' "$2" "$3" >>"$job"
      shift 3
      ;;
    *) echo "$name: unknown driver argument '$1'" >&2; exit 2 ;;
  esac
done

# Programs find their own runfiles the usual way; each gets a fresh
# TEST_TMPDIR inside the guest (the host's build trees are read-only there).
exec bash "$vm_run" \
  --out-dir "$TEST_TMPDIR/softroce-out" \
  --env "TEST_SRCDIR=$TEST_SRCDIR" \
  --env "RUNFILES_DIR=$runfiles" \
  --env "TEST_WORKSPACE=${TEST_WORKSPACE:-pagewire}" \
  --env "TEST_TARGET=$name" \
  "${opts[@]}" \
  --job "$job"
