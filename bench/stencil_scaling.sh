#!/usr/bin/env bash
# stencil_scaling.sh - issue 4's stencil scaling benchmark: the main example
# (examples/heat.c: 2D Jacobi on block-placed global memory, halos by remote
# page faults, a pw_barrier per iteration) on 1, 2 and 4 ranks, against the
# same stencil written by hand with MPI (bench/stencil_mpi.c: row blocks,
# MPI_Sendrecv halo exchange), in one invocation:
#
#   bash bench/stencil_scaling.sh [--n GRID] [--iters I] [--reps R] [--ranks "1 2 4"]
#                                 [--bin DIR]
#
# --bin DIR takes heat and pagewire-run from DIR instead of building them
# (when the tree does not build).
#
# Pagewire runs in netns hosts (cluster/netns/netns-hosts.sh, one namespace
# per rank, a veth bridge between them) and, for reference, on loopback.
# OpenMPI runs on loopback (TCP BTL on lo): its runtime (PMIx) cannot reach
# ranks placed in other network namespaces. For each N every configuration
# runs R times, interleaved (netns, loopback, MPI, netns, ...), and the
# table shows the median ms/iteration of each. Every run must print
# "matches the sequential computation", and every run's heat sum must be
# the same, so both programs provably compute the same thing.
#
# Needs root (netns), openmpi-bin and libopenmpi-dev.
set -euo pipefail
cd "$(dirname "$0")/.."

N=1024
ITERS=100
REPS=3
RANKS="1 2 4"
BIN=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --n) N="$2"; shift 2 ;;
    --iters) ITERS="$2"; shift 2 ;;
    --reps) REPS="$2"; shift 2 ;;
    --ranks) RANKS="$2"; shift 2 ;;
    --bin) BIN="$2"; shift 2 ;;
    *) echo "usage: $0 [--n GRID] [--iters I] [--reps R] [--ranks \"1 2 4\"]" >&2; exit 2 ;;
  esac
done

for tool in mpicc mpirun ip; do
  command -v "$tool" >/dev/null ||
    { echo "stencil_scaling.sh: $tool not found (scripts/install-deps.sh)" >&2; exit 1; }
done
[[ "$(id -u)" == 0 ]] || { echo "stencil_scaling.sh: needs root for netns hosts" >&2; exit 1; }

if [[ -z "$BIN" ]]; then
  bazel build //examples:heat //cluster/launcher:pagewire-run >&2
  cp_from=(bazel-bin/examples/heat bazel-bin/cluster/launcher/pagewire-run)
else
  cp_from=("$BIN/heat" "$BIN/pagewire-run")
fi

tmp=$(mktemp -d)
prefix="pwss$$"
maxn=0
for n in $RANKS; do (( n > maxn )) && maxn=$n; done
cleanup() {
  cluster/netns/netns-hosts.sh down "$prefix" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
# Copied out: another build in this workspace may replace bazel-bin meanwhile.
cp "${cp_from[@]}" "$tmp/"
# The flags Bazel builds heat.c with (.bazelrc: -O2 -g; BUILD: -std=c11).
mpicc -O2 -g -std=c11 -Wall -o "$tmp/stencil_mpi" bench/stencil_mpi.c
cluster/netns/netns-hosts.sh up "$prefix" "$maxn" >&2

MPIRUN=(mpirun --allow-run-as-root --oversubscribe --mca pml ob1
        --mca btl tcp,self --mca btl_tcp_if_include lo)

echo "stencil_scaling.sh: $(nproc) cpus, $(uname -sr), $(date -u +%FT%TZ)," \
     "grid ${N}x${N}, $ITERS iterations, $REPS reps, load $(cut -d' ' -f1-3 /proc/loadavg)"

# run KIND NRANKS: one run; appends "KIND NRANKS ms sum" to $tmp/results.
run() {
  local kind="$1" n="$2" out="$tmp/$1.$2.out" line
  case "$kind" in
    pw_netns) cmd=("$tmp/pagewire-run" -n "$n" --netns "$prefix" "$tmp/heat" "$N" "$ITERS") ;;
    pw_lo) cmd=("$tmp/pagewire-run" -n "$n" "$tmp/heat" "$N" "$ITERS") ;;
    mpi) cmd=("${MPIRUN[@]}" -np "$n" "$tmp/stencil_mpi" "$N" "$ITERS") ;;
  esac
  if ! "${cmd[@]}" >"$out" 2>&1; then
    cat "$out" >&2
    echo "stencil_scaling.sh: $kind on $n ranks failed: ${cmd[*]}" >&2
    exit 1
  fi
  line=$(grep -E '(heat|stencil_mpi): [0-9]+x[0-9]+ grid.* ms/iteration' "$out" | sed 's/^\[0\] //')
  [[ "$line" == *"matches the sequential computation"* ]] ||
    { cat "$out" >&2; echo "stencil_scaling.sh: $kind on $n ranks: wrong result" >&2; exit 1; }
  echo "  $kind n=$n: $line"
  echo "$kind $n $(sed -E 's/.*: ([0-9.]+) ms\/iteration, heat sum ([0-9.]+).*/\1 \2/' <<<"$line")" \
    >>"$tmp/results"
}

for n in $RANKS; do
  for ((r = 0; r < REPS; r++)); do
    run pw_netns "$n"
    run pw_lo "$n"
    run mpi "$n"
  done
done

sums=$(awk '{print $4}' "$tmp/results" | sort -u | wc -l)
[[ "$sums" == 1 ]] ||
  { echo "stencil_scaling.sh: runs disagree on the heat sum:" >&2; cat "$tmp/results" >&2; exit 1; }
echo "every run matched the sequential computation; heat sum $(awk 'NR==1{print $4}' "$tmp/results") in all $(wc -l <"$tmp/results") runs"
echo

awk -v ranks="$RANKS" '
  { v[$1 " " $2] = v[$1 " " $2] " " $3 }
  function median(s,   a, n, i, j, t) {
    n = split(s, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  END {
    k = split(ranks, R, " ")
    split("pw_netns pw_lo mpi", K, " ")
    for (i = 1; i <= k; i++) for (j = 1; j <= 3; j++) m[K[j], R[i]] = median(v[K[j] " " R[i]])
    printf "%-6s | %-27s | %-27s | %-27s | %-9s %-9s\n", "", "Pagewire netns", "Pagewire loopback", "MPI loopback", "PW/MPI", "PW/MPI"
    printf "%-6s | %-13s %-13s | %-13s %-13s | %-13s %-13s | %-9s %-9s\n", "ranks", "ms/iter", "efficiency", "ms/iter", "efficiency", "ms/iter", "efficiency", "netns", "loopback"
    for (i = 1; i <= k; i++) {
      n = R[i]
      printf "%-6s |", n
      for (j = 1; j <= 3; j++) {
        t1 = m[K[j], R[1]] * R[1]   # T1 (the first rank count, normally 1)
        printf " %-13.3f %-13.2f |", m[K[j], n], t1 / (n * m[K[j], n])
      }
      printf " %-9.2f %-9.2f\n", m["pw_netns", n] / m["mpi", n], m["pw_lo", n] / m["mpi", n]
    }
    last = R[k]
    r = m["pw_netns", last] / m["mpi", last]
    printf "\nPagewire/MPI at %d ranks (netns Pagewire vs loopback MPI): %.2f, target <= 1.3: %s\n", last, r, r <= 1.3 ? "met" : "MISSED"
    r = m["pw_lo", last] / m["mpi", last]
    printf "Pagewire/MPI at %d ranks (both on loopback): %.2f, target <= 1.3: %s\n", last, r, r <= 1.3 ? "met" : "MISSED"
    print "efficiency = T1 / (N * TN), T1 from the same configuration; medians of the reps"
  }' "$tmp/results"
