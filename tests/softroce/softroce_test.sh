#!/usr/bin/env bash
# softroce_test.sh - the test driver behind softroce_test() (softroce.bzl):
# boots ONE soft-RoCE VM with cluster/softroce/vm-run.sh and runs every
# given program in it, in order, each with its own arguments; the test fails
# with the first failing program's status. Arguments (written by the macro):
#   --timeout-s N         the VM's harness watchdog
#   --env NAME=VALUE      environment for every program (repeatable)
#   --run N PATH ARG...   one program: N words follow (PATH and its args)
#   --line N WORD...      one bash command line made of the N words (joined
#                         with spaces, not quoted: shell syntax allowed)
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
take() { # take N words after the option; sets words=()
  local n=$1
  shift
  [[ "$n" =~ ^[0-9]+$ && $# -ge $n ]] || { echo "$name: bad driver arguments" >&2; exit 2; }
  words=("${@:1:n}")
}
while [[ $# -gt 0 ]]; do
  case "$1" in
    --timeout-s|--env) opts+=("$1" "$2"); shift 2 ;;
    --run)
      take "$2" "${@:3}"
      shift $((2 + $2))
      printf '%q ' "${words[@]}" >>"$job"
      echo >>"$job"
      ;;
    --line)
      take "$2" "${@:3}"
      shift $((2 + $2))
      echo "${words[*]}" >>"$job"
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
