#!/usr/bin/env bash
# dsm_verbs_vm.sh DSM_TEST [MODE...] - every multi-rank DSM test on real
# verbs (soft-RoCE, inside the VM of cluster/softroce): dsm_test.sh MODE
# for each mode (all of them by default: the dsm_test.sh modes except netns
# and scale) with PAGEWIRE_TRANSPORT=verbs, so a rank without a usable RDMA
# port fails instead of falling back to TCP. On verbs the faults are RDMA
# READs, diffs RDMA WRITEs, atomics RDMA atomics (the home's own too,
# through a queue pair to itself), barrier lists and pushed pages verbs
# messages. Prints each mode's result and time, and fails naming every mode
# that failed.
set -uo pipefail
DSM_TEST="$1"
shift
modes=("$@")
if [[ ${#modes[@]} -eq 0 ]]; then
  modes=(loopback file death stop expel collectives heat
         coherence_histogram coherence_false_sharing coherence_queue
         coherence_atomics coherence_races coherence_acquire
         coherence_acquire_racing coherence_hot coherence_readahead
         coherence_push coherence_push_locks coherence_notices
         coherence_lock_log
         litmus_mp litmus_sb litmus_dekker litmus_counter litmus_errors
         rank_threads_relacq rank_threads_acquire rank_threads_release
         rank_threads_barrier rank_threads_locked rank_threads_sc)
fi
export PAGEWIRE_TRANSPORT=verbs
# The TCG guest runs about ten times slower than the host: the rank-threads
# tests do a tenth of the work (8 threads, 100 iterations, 10 pages each).
export DSM_RANK_THREADS="${DSM_RANK_THREADS:-8 100 10}"
failed=()
for mode in "${modes[@]}"; do
  start=$SECONDS
  if out="$(bash "$DSM_TEST" "$mode" 2>&1)"; then
    echo "dsm_verbs_vm: $mode: PASS in $((SECONDS - start)) s"
  else
    echo "$out" | tail -40
    echo "dsm_verbs_vm: $mode: FAIL in $((SECONDS - start)) s"
    failed+=("$mode")
  fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "dsm_verbs_vm: FAIL: ${#failed[@]} of ${#modes[@]} modes failed on verbs: ${failed[*]}"
  exit 1
fi
echo "dsm_verbs_vm: PASS: all ${#modes[@]} modes on verbs"
