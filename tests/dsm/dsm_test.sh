#!/usr/bin/env bash
# dsm_test.sh MODE - multi-rank DSM tests with real ranks started by
# pagewire-run, over the TCP transport.
#   loopback  4 ranks x 8 threads fault every home's pages of a block, a
#             cyclic, an on-rank and a first-touch allocation (dsm_check)
#   netns     the same, each rank in its own network namespace with its own
#             address (cluster/netns), then the coherence_* and litmus_*
#             tests there too; needs root, skips with the reason
#             otherwise unless PAGEWIRE_REQUIRE_NETNS=1
#   file      a file homed on rank 1, read on demand by its file manager
#   death     a rank dies: the faults that need it fail loudly (SIGBUS with
#             the reason), barriers fail naming it within a second of its
#             connections closing (the lease is a minute), the rest carries
#             on; then a rank that exits before it joins is declared dead on
#             the launcher's word
#   stop      a home stopped (SIGSTOP) for 10 s, past its 3 s lease, while 4
#             readers fault on its pages: it is suspected, never declared
#             dead, no fault fails, every word read is exact, and the
#             suspicion is logged and lifted
#   expel     an operator declares a live rank dead (pagewire-ctl): it is
#             out for good (every call fails naming why, its pw_finalize
#             fails), the others carry on
#   collectives  collective calls that disagree (a rank's part fails, the
#             arguments or the calls differ): every rank gets the same
#             status and message, nobody hangs, the job goes on
#   heat      the main example on 4 ranks, checked against a sequential run
#   scale     more ranks than the other modes: heat on 70 ranks (more than
#             64, so the home directory's cacher sets take two words), and
#             dsm_coherence histogram, false_sharing, push and notices on 8;
#             every result exact and not one error or warning logged
#   coherence_TEST  dsm_coherence TEST on 4 ranks (histogram, false_sharing,
#             queue, atomics, races, acquire, acquire_racing, hot,
#             readahead, push, push_locks, notices, lock_log; coherence_push
#             also once with PAGEWIRE_PUSH=0; coherence_lock_log with
#             PAGEWIRE_LOG=debug, and its lock's log must have been cut)
#   litmus_TEST     dsm_litmus TEST on 4 ranks (mp, sb, dekker, counter,
#             errors): sequential-consistency memory (pw_alloc_sc)
#   rank_threads_SYNC  dsm_rank_threads SYNC on 4 ranks x 16 threads, each
#             thread releasing and acquiring on its own (relacq, acquire,
#             release, barrier, locked, sc); barrier runs four times:
#             pushes and read-ahead each on and off. DSM_RANK_THREADS="T I P"
#             sets threads, iterations and pages (default "16 200 25")
# Every mode runs with PAGEWIRE_CHECK=1: each dropped copy is audited for
# lost writes.
set -euo pipefail

mode="${1:?usage: dsm_test.sh loopback|netns|file|death|heat|scale|coherence_TEST|litmus_TEST|rank_threads_SYNC}"
fail() {
  echo "dsm_test($mode): FAIL: $*" >&2
  exit 1
}
runfiles="${RUNFILES_DIR:-${TEST_SRCDIR:?not run under bazel test}}"
ws="$runfiles/pagewire"
RUN="$ws/cluster/launcher/pagewire-run"
NETNS="$ws/cluster/netns/netns-hosts.sh"
out="${TEST_TMPDIR:-/tmp}/dsm_$mode.log"
# Every rank audits every copy it drops for lost writes, and ends at the
# first (runtime/coherence/coherence.h).
export PAGEWIRE_CHECK=1

expect_lines() {  # expect_lines PATTERN COUNT
  local n
  n="$(grep -cE "$1" "$out" || true)"
  [[ "$n" == "$2" ]] || { cat "$out"; fail "expected $2 lines matching '$1', got $n"; }
}

case "$mode" in
  loopback)
    "$RUN" -n 4 "$ws/tests/dsm/dsm_check" 8 64 >"$out" 2>&1 || { rc=$?; cat "$out"; fail "dsm_check exited $rc"; }
    expect_lines '^\[[0-3]\] dsm_check: rank [0-3] ok' 4
    ;;
  netns)
    if [[ "$(id -u)" != 0 ]] || ! ip netns add "pwd$$probe" 2>/dev/null; then
      [[ "${PAGEWIRE_REQUIRE_NETNS:-}" == 1 ]] && fail "cannot create network namespaces"
      echo "dsm_test(netns): SKIP: needs root and network namespaces"
      exit 0
    fi
    ip netns delete "pwd$$probe"
    prefix="pwd$$"
    trap '"$NETNS" down "$prefix" >/dev/null 2>&1 || true' EXIT
    "$NETNS" up "$prefix" 4 >/dev/null || fail "netns-hosts.sh up failed"
    PAGEWIRE_LOG=debug "$RUN" -n 4 --netns "$prefix" "$ws/tests/dsm/dsm_check" 8 64 >"$out" 2>&1 ||
      { rc=$?; cat "$out"; fail "dsm_check in netns hosts exited $rc"; }
    expect_lines '^\[[0-3]\] dsm_check: rank [0-3] ok' 4
    # The ranks really talked over the namespaces' addresses.
    grep -qE 'connected to peer [0-9] at 10\.' "$out" || { cat "$out"; fail "no data-plane connection over a netns address"; }
    # The coherence and sequential-consistency correctness tests, in the
    # same hosts.
    for t in histogram false_sharing queue atomics races acquire acquire_racing hot readahead push push_locks notices; do
      "$RUN" -n 4 --netns "$prefix" "$ws/tests/dsm/dsm_coherence" "$t" >"$out" 2>&1 ||
        { rc=$?; cat "$out"; fail "dsm_coherence $t in netns hosts exited $rc"; }
      expect_lines "^\[[0-3]\] dsm_coherence: $t rank [0-3] ok" 4
    done
    for t in mp sb dekker counter; do
      "$RUN" -n 4 --netns "$prefix" "$ws/tests/dsm/dsm_litmus" "$t" >"$out" 2>&1 ||
        { rc=$?; cat "$out"; fail "dsm_litmus $t in netns hosts exited $rc"; }
      expect_lines "^\[[0-3]\] dsm_litmus: $t rank [0-3] ok" 4
    done
    ;;
  file)
    data="${TEST_TMPDIR:-/tmp}/dsm_file.bin"
    head -c 777777 /dev/urandom >"$data"
    "$RUN" -n 3 "$ws/tests/dsm/dsm_file" "$data" 1 >"$out" 2>&1 || { rc=$?; cat "$out"; fail "dsm_file exited $rc"; }
    expect_lines '^\[[0-2]\] dsm_file: rank [0-2] ok' 3
    ;;
  death)
    set +e
    # A minute-long lease: the death must be known from evidence (the dead
    # process's connections closing), not from its silence.
    PAGEWIRE_LEASE_MS=60000 "$RUN" -n 3 --grace-ms 30000 "$ws/tests/dsm/dsm_death" >"$out" 2>&1
    status=$?
    set -e
    [[ "$status" == 137 ]] || { cat "$out"; fail "the launcher exited $status, want 137 (rank 1 killed by signal 9)"; }
    expect_lines '^pagewire-run: rank 1 \(pid [0-9]+\) killed by signal 9' 1
    expect_lines '^\[0\] dsm_death: rank 0 got SIGBUS reading a page homed on dead rank 1' 1
    expect_lines '^\[0\] dsm_death: rank 0 got SIGBUS reading an SC page dead rank 1 held' 1
    expect_lines '^\[0\] pagewire: error: fault at 0x[0-9a-f]+ .*rank 1.*SIGBUS' 2
    # 64 faults on the dead home's pages: one line in full, then the count
    # at 2, 4, 8, 16, 32 and 64, not a line per fault.
    expect_lines '^\[0\] dsm_death: rank 0 got SIGBUS on 63 more pages of dead rank 1' 1
    expect_lines '^\[0\] pagewire: error: (2|4|8|16|32|64) faults failed so far for this reason, .*rank 1, is dead' 6
    expect_lines '^\[0\] pagewire: error: [0-9]+ faults failed in all for this reason' 0
    expect_lines '^\[0\] pagewire: error: fault at .*died with rank 1, which held it for writing' 1
    expect_lines '^\[2\] dsm_death: rank 2 still reads rank 0.s pages' 1
    expect_lines '^\[[02]\] dsm_death: rank [02]: barrier after the death: .*rank 1' 2
    expect_lines '^\[[02]\] dsm_death: rank [02]: the death was known after [0-9]+ ms' 2
    expect_lines '^\[[02]\] pagewire: error: rank 1 is dead' 2
    expect_lines '^\[0\] pagewire: warning: coordinator: rank 1 declared DEAD at epoch [0-9]+: (its control connection closed|pagewire-run saw its process end)' 1
    # Rank 1 exits before it joins: only the launcher's word can tell.
    set +e
    PAGEWIRE_LEASE_MS=60000 "$RUN" -n 2 --grace-ms 30000 "$ws/tests/dsm/dsm_death" early >"$out" 2>&1
    status=$?
    set -e
    [[ "$status" == 3 ]] || { cat "$out"; fail "the launcher exited $status, want 3 (rank 1's status)"; }
    expect_lines '^\[0\] dsm_death: rank 0: pw_init failed: .*rank 1 (became|is) DEAD \(pagewire-run saw its process end: exited with status 3\)' 1
    ;;
  stop)
    "$RUN" -n 6 "$ws/tests/dsm/dsm_stop" 10000 >"$out" 2>&1 || { rc=$?; cat "$out"; fail "dsm_stop exited $rc"; }
    expect_lines '^\[[0-5]\] dsm_stop: rank [0-5] ok' 6
    expect_lines '^\[[1-4]\] dsm_stop: rank [1-4] read 64 pages in [0-9]+ ms: 0 wrong words, 0 faults failed' 4
    # The coordinator (on rank 0) suspects the home and hears from it again.
    expect_lines '^\[0\] pagewire: warning: coordinator: rank 5 is SUSPECT' 1
    expect_lines '^\[0\] pagewire: warning: coordinator: rank 5 heard from again' 1
    # Every other rank logs the suspicion and its end.
    expect_lines '^\[[0-4]\] pagewire: warning: rank 5 is suspected' 5
    expect_lines '^\[[0-4]\] pagewire: warning: rank 5 is no longer suspected' 5
    expect_lines 'DEAD|is dead' 0
    ;;
  expel)
    set +e
    "$RUN" -n 3 "$ws/tests/dsm/dsm_expel" "$ws/cluster/coordinator/pagewire-ctl" >"$out" 2>&1
    status=$?
    set -e
    [[ "$status" == 0 ]] || { cat "$out"; fail "dsm_expel exited $status"; }
    expect_lines '^\[[0-2]\] dsm_expel: rank [0-2] ok' 3
    expect_lines '^\[0\] rank 2 declared DEAD at epoch [0-9]+' 1
    expect_lines '^\[0\] rank 2 DEAD +\(pagewire-ctl: test: node-2 is being replaced\)' 1
    expect_lines '^\[0\] rank [01] ALIVE +silent [0-9]+ ms' 4
    expect_lines '^\[2\] dsm_expel: rank 2: pw_finalize: this rank is no longer a member of the job: .*node-2 is being replaced' 1
    ;;
  collectives)
    "$RUN" -n 3 "$ws/tests/dsm/dsm_collectives" >"$out" 2>&1 || { rc=$?; cat "$out"; fail "dsm_collectives exited $rc"; }
    expect_lines '^\[[0-2]\] dsm_collectives: rank [0-2] ok' 3
    for c in attach_dir zero_bytes sizes free_mismatch kinds barrier_vs_alloc alloc_vs_barrier; do
      expect_lines "^\\[[0-2]\\] dsm_collectives: $c: rank [0-2]: " 3
      # The same status and message on every rank.
      n="$(grep -E "^\[[0-2]\] dsm_collectives: $c: rank [0-2]: " "$out" |
           sed -E 's/^\[[0-2]\] dsm_collectives: [a-z_]+: rank [0-2]: //' | sort -u | wc -l)"
      [[ "$n" == 1 ]] || { cat "$out"; fail "$c: the ranks did not get the same answer"; }
    done
    expect_lines '^\[0\] dsm_collectives: attach_dir: .*rank 0: .*/tmp.*rank [12]: ' 1
    expect_lines '^\[0\] dsm_collectives: kinds: .*different collectives.*rank 0: pw_alloc.*rank 1: pw_free' 1
    expect_lines '^\[0\] dsm_collectives: barrier_vs_alloc: .*different collectives.*rank 0: pw_alloc.*rank 1: pw_barrier.*rank 2: pw_barrier' 1
    expect_lines '^\[0\] dsm_collectives: alloc_vs_barrier: .*different collectives.*rank 0: pw_free.*rank 2: pw_barrier' 1
    ;;
  coherence_*)
    test="${mode#coherence_}"
    ranks=4
    log_level=""
    [[ "$test" == lock_log ]] && log_level=debug
    PAGEWIRE_LOG="$log_level" "$RUN" -n "$ranks" "$ws/tests/dsm/dsm_coherence" "$test" >"$out" 2>&1 ||
      { rc=$?; cat "$out"; fail "dsm_coherence $test exited $rc"; }
    expect_lines "^\[[0-3]\] dsm_coherence: $test rank [0-3] ok" 4
    if [[ "$test" == lock_log ]]; then
      grep -E 'its log of writes reached' "$out" | head -1
      grep -qE 'lock 0x[0-9a-f]+: its log of writes reached [0-9]+ entries' "$out" ||
        { cat "$out"; fail "lock_log: the lock's log was never cut (kMaxLockLog)"; }
    fi
    if [[ "$test" == push ]]; then
      grep -E 'pages pushed' "$out"
      PAGEWIRE_PUSH=0 "$RUN" -n "$ranks" "$ws/tests/dsm/dsm_coherence" "$test" >"$out" 2>&1 ||
        { rc=$?; cat "$out"; fail "dsm_coherence $test with PAGEWIRE_PUSH=0 exited $rc"; }
      expect_lines "^\[[0-3]\] dsm_coherence: $test rank [0-3] ok" 4
    fi
    ;;
  rank_threads_*)
    sync="${mode#rank_threads_}"
    variants=("PAGEWIRE_PUSH=1 PAGEWIRE_READAHEAD=1")
    if [[ "$sync" == barrier ]]; then
      variants+=("PAGEWIRE_PUSH=0 PAGEWIRE_READAHEAD=1" "PAGEWIRE_PUSH=1 PAGEWIRE_READAHEAD=0"
                 "PAGEWIRE_PUSH=0 PAGEWIRE_READAHEAD=0")
    fi
    for v in "${variants[@]}"; do
      # shellcheck disable=SC2086  # three words: threads, iterations, pages
      env $v "$RUN" -n 4 "$ws/tests/dsm/dsm_rank_threads" "$sync" ${DSM_RANK_THREADS:-16 200 25} >"$out" 2>&1 ||
        { rc=$?; cat "$out"; fail "dsm_rank_threads $sync ($v) exited $rc"; }
      expect_lines "^\[[0-3]\] dsm_rank_threads: $sync rank [0-3] ok" 4
      expect_lines 'coherence invariant violated' 0
      grep -E "rank 0 ok" "$out" | sed "s/^/($v) /"
    done
    ;;
  litmus_*)
    test="${mode#litmus_}"
    "$RUN" -n 4 "$ws/tests/dsm/dsm_litmus" "$test" >"$out" 2>&1 ||
      { rc=$?; cat "$out"; fail "dsm_litmus $test exited $rc"; }
    expect_lines "^\[[0-3]\] dsm_litmus: $test rank [0-3] ok" 4
    ;;
  heat)
    "$RUN" -n 4 "$ws/examples/heat" 512 50 >"$out" 2>&1 || { rc=$?; cat "$out"; fail "heat exited $rc"; }
    expect_lines '^\[0\] heat: 512x512 grid, 50 iterations on 4 ranks: .* matches the sequential computation' 1
    expect_lines '^\[[0-3]\] heat: rank [0-3]: .*; [0-9]+ faults, [1-9][0-9]* remote fetches' 4
    # A grid that does not split into equal bands: the ranks say so and
    # name the next size that does (576 for 3 ranks), exit status 2. (The
    # first rank to exit ends the others, so not all may get to say it.)
    rc=0
    "$RUN" -n 3 "$ws/examples/heat" 512 5 >"$out" 2>&1 || rc=$?
    ((rc == 2)) || { cat "$out"; fail "heat 512 on 3 ranks exited $rc, want 2"; }
    grep -qE '^\[[0-2]\] heat: N=512 does not split into 3 page-aligned bands .*N=576 is the next that does' "$out" ||
      { cat "$out"; fail "heat 512 on 3 ranks did not name N=576"; }
    ;;
  scale)
    "$RUN" -n 70 "$ws/examples/heat" 1120 3 >"$out" 2>&1 || { rc=$?; cat "$out"; fail "heat on 70 ranks exited $rc"; }
    expect_lines '^\[0\] heat: 1120x1120 grid, 3 iterations on 70 ranks: .* matches the sequential computation' 1
    expect_lines 'pagewire: (error|warning)' 0
    for t in histogram false_sharing push notices; do
      "$RUN" -n 8 "$ws/tests/dsm/dsm_coherence" "$t" >"$out" 2>&1 ||
        { rc=$?; cat "$out"; fail "dsm_coherence $t on 8 ranks exited $rc"; }
      expect_lines "^\[[0-7]\] dsm_coherence: $t rank [0-7] ok" 8
      expect_lines 'pagewire: (error|warning)' 0
    done
    ;;
  *)
    fail "unknown mode"
    ;;
esac
grep -vE 'tcp:|coordinator:' "$out" || true
echo "dsm_test($mode): PASS"
