#!/usr/bin/env bash
# dsm_verbs_vm.sh LAUNCHER DSM_CHECK DSM_COHERENCE DSM_LITMUS - the runtime on real
# verbs (soft-RoCE, inside the VM of cluster/softroce): 2 ranks with
# PAGEWIRE_TRANSPORT=verbs fault every home's pages (one-sided RDMA READs) of
# block, cyclic, on-rank and first-touch allocations (first-touch owners
# register each page when a peer first asks for it; the key comes back in
# the home's reply), and write under release consistency (diffs by RDMA
# WRITE, atomics by RDMA atomics, halos pushed with the barrier's verbs
# messages), every byte checked; and sequentially
# consistent memory (grants, recalls and write-backs over verbs) passes the
# message-passing litmus test and an exact CPU-atomic counter.
set -euo pipefail
RUN="$1" CHECK="$2" COHERENCE="$3" LITMUS="$4"
fail() { echo "dsm_verbs_vm: FAIL: $*" >&2; exit 1; }
export PAGEWIRE_TRANSPORT=verbs
out="${TEST_TMPDIR:-/tmp}/dsm_verbs.log"

"$RUN" -n 2 "$CHECK" 4 16 >"$out" 2>&1 || { rc=$?; cat "$out"; fail "dsm_check on verbs exited $rc"; }
grep -q "data plane verbs" "$out" || { cat "$out"; fail "the runtime did not use verbs"; }
[[ "$(grep -cE '^\[[01]\] dsm_check: rank [01] ok' "$out")" == 2 ]] || { cat "$out"; fail "dsm_check on verbs"; }
grep -E 'dsm_check|data plane' "$out"

# atomics: the home's own atomics go through its NIC too (a queue pair to
# itself), since rxe's atomics are not atomic with the CPU's.
for t in false_sharing queue atomics push; do
  "$RUN" -n 2 "$COHERENCE" "$t" >"$out" 2>&1 || { rc=$?; cat "$out"; fail "dsm_coherence $t on verbs exited $rc"; }
  [[ "$(grep -cE "^\[[01]\] dsm_coherence: $t rank [01] ok" "$out")" == 2 ]] || { cat "$out"; fail "dsm_coherence $t on verbs"; }
  grep -E 'dsm_coherence' "$out"
done

for t in mp counter; do
  LITMUS_ROUNDS=50 "$RUN" -n 2 "$LITMUS" "$t" >"$out" 2>&1 || { rc=$?; cat "$out"; fail "dsm_litmus $t on verbs exited $rc"; }
  [[ "$(grep -cE "^\[[01]\] dsm_litmus: $t rank [01] ok" "$out")" == 2 ]] || { cat "$out"; fail "dsm_litmus $t on verbs"; }
  grep -E 'dsm_litmus' "$out"
done

echo "dsm_verbs_vm: PASS"
