#!/usr/bin/env bash
# coherence.sh - issue 4's coherence benchmark (bench/coherence_bench.c) on
# 2 and 4 ranks under pagewire-run (loopback), then one table:
#
#   bash bench/coherence.sh [--bin DIR] [--ranks "2 4"] [coherence_bench options...]
#
# Options after --ranks go to coherence_bench (--barriers, --pages,
# --rounds, --lock-iters). --bin DIR takes coherence_bench and pagewire-run
# from DIR instead of building them (when the tree does not build).
set -euo pipefail
cd "$(dirname "$0")/.."

RANKS="2 4"
BIN=""
if [[ "${1:-}" == --bin ]]; then BIN="$2"; shift 2; fi
if [[ "${1:-}" == --ranks ]]; then RANKS="$2"; shift 2; fi

if [[ -z "$BIN" ]]; then
  bazel build //bench:coherence_bench //cluster/launcher:pagewire-run >&2
  BIN=bazel-bin
  cp_from=(bazel-bin/bench/coherence_bench bazel-bin/cluster/launcher/pagewire-run)
else
  cp_from=("$BIN/coherence_bench" "$BIN/pagewire-run")
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Copied out: another build in this workspace may replace bazel-bin meanwhile.
cp "${cp_from[@]}" "$tmp/"

echo "coherence.sh: $(nproc) cpus, $(uname -sr), $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
for n in $RANKS; do
  echo "\$ pagewire-run -n $n coherence_bench $*"
  "$tmp/pagewire-run" -n "$n" "$tmp/coherence_bench" "$@" >"$tmp/out.$n" 2>"$tmp/err.$n" ||
    { cat "$tmp/out.$n" "$tmp/err.$n" >&2; echo "coherence.sh: $n ranks failed" >&2; exit 1; }
  grep -E '^\[[0-9]+\] (barrier|diff|lock|stats)' "$tmp/out.$n"
  grep '^\[0\] summary:' "$tmp/out.$n" | sed 's/^\[0\] summary: //' >>"$tmp/summaries"
done

echo
awk '
  { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[NR, kv[1]] = kv[2] } }
  END {
    printf "%-52s", "== coherence_bench (rank 0 unless noted)"
    for (r = 1; r <= NR; r++) printf " %12s", v[r, "nranks"] " ranks"
    printf "\n"
    split("bar_p50_us bar_p99_us full_mbs full_pps sparse_mbs sparse_pps lock_remote_acq_p50_us lock_remote_acq_p99_us lock_remote_rel_p50_us lock_local_acq_p50_us lock_local_acq_p99_us lock_local_rel_p50_us lock_contended_rate lock_contended_mean_us", K, " ")
    split("barrier p50 (us)|barrier p99 (us)|diff full pages: MB/s modified (rank 1)|diff full pages: pages/s|diff sparse (1/64): MB/s modified|diff sparse (1/64): pages/s|lock remote uncontended: acquire p50 (us)|lock remote uncontended: acquire p99 (us)|lock remote uncontended: release p50 (us)|lock local uncontended: acquire p50 (us)|lock local uncontended: acquire p99 (us)|lock local uncontended: release p50 (us)|lock contended, all ranks: acquires/s total|lock contended: mean acquire (us)", L, "|")
    for (k = 1; k <= 14; k++) {
      printf "%-52s", L[k]
      for (r = 1; r <= NR; r++) printf " %12s", v[r, K[k]]
      printf "\n"
    }
  }' "$tmp/summaries"
