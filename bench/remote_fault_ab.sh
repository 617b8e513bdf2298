#!/usr/bin/env bash
# remote_fault_ab.sh - two builds of bench/remote_fault, latency only,
# alternated run by run (A B A B ...), so that drift of a shared machine
# hits both alike; prints, per build, the median over runs of each run's own
# ratio pagewire p50 / floor p50, with min and max, and the medians of the
# figures behind it.
#
#   bash bench/remote_fault_ab.sh DIR_A DIR_B [RUNS (10)] [PAGES (4000)]
#
# DIR_A and DIR_B each hold a remote_fault binary and a pagewire-run (copy
# them out of bazel-bin after building each tree, e.g. a commit and its
# parent). Runs whose floor is below --quiet-floor-us (default 25) are left
# out: on the 2-vCPU VM the floor halves whenever other work keeps both
# CPUs busy (waking an idle vCPU is what is slow there), and ratios from
# the two states do not mix.
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: $0 DIR_A DIR_B [RUNS] [PAGES]" >&2; exit 2; }
A=$1 B=$2 RUNS=${3:-10} PAGES=${4:-4000}
QUIET=${QUIET_FLOOR_US:-25}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for i in $(seq "$RUNS"); do
  for side in A B; do
    dir=$A; [[ $side == B ]] && dir=$B
    "$dir/pagewire-run" -n 2 "$dir/remote_fault" --pages "$PAGES" --rounds 3 \
      --latency-only 2>/dev/null | grep '^\[0\] summary:' >> "$tmp/$side" || true
  done
done
for side in A B; do
  dir=$A; [[ $side == B ]] && dir=$B
  awk -v name="$side ($dir)" -v quiet="$QUIET" '
    function val(k,   i, kv) {
      for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) return kv[2] }
    }
    function median(a, n,   i, j, t) {
      for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) {
        t = a[j]; a[j] = a[j-1]; a[j-1] = t }
      return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
    }
    { total++; if (val("floor_p50_us") < quiet) next
      n++; r[n] = val("pw_p50_us") / val("floor_p50_us"); rr[n] = r[n]
      p[n] = val("pw_p50_us"); f[n] = val("floor_p50_us") }
    END {
      if (n == 0) { printf "%s: no quiet runs of %d\n", name, total; exit }
      lo = hi = r[1]; for (i = 2; i <= n; i++) { if (r[i] < lo) lo = r[i]; if (r[i] > hi) hi = r[i] }
      printf "%s: %d of %d runs quiet; pagewire/floor p50 median %.3f (min %.3f, max %.3f); pagewire p50 %.2f us, floor p50 %.2f us\n",
             name, n, total, median(rr, n), lo, hi, median(p, n), median(f, n)
    }' "$tmp/$side"
done
