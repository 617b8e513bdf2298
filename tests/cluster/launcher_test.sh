#!/usr/bin/env bash
# launcher_test.sh - pagewire-run end to end with rank_helper (see BUILD):
# output prefixes and whole lines, the bootstrap environment, exit-status
# propagation, the death report, a clean and prompt end of the other ranks,
# SIGKILL after the grace period, signal forwarding, and bad usage.
#
# Each pagewire-run call runs under `timeout` so that a hang is reported as
# a failure naming the case instead of a silent wait for Bazel's timeout.
set -euo pipefail

fail() {
  echo "launcher_test: FAIL: $*" >&2
  exit 1
}

runfiles="${RUNFILES_DIR:-${TEST_SRCDIR:?not run under bazel test}}"
ws="$runfiles/pagewire"
RUN="$ws/cluster/launcher/pagewire-run"
HELPER="$ws/tests/cluster/rank_helper"
tmp="${TEST_TMPDIR:?}/launcher_test"
rm -rf "$tmp"
mkdir -p "$tmp"
out="$tmp/out"
err="$tmp/err"
# Generous: a healthy case takes milliseconds.
readonly HANG_LIMIT=120

# run CASE ARGS...: runs pagewire-run, stdout to $out, stderr to $err, sets rc.
run() {
  local name="$1"
  shift
  set +e
  timeout -k 5 "$HANG_LIMIT" "$RUN" "$@" >"$out" 2>"$err"
  rc=$?
  set -e
  if ((rc == 124 || rc == 137 && $(grep -c 'killed by signal 9' "$err") == 0)); then
    cat "$err" >&2
    fail "$name: pagewire-run did not finish within ${HANG_LIMIT}s (rc $rc)"
  fi
}
expect_rc() {
  ((rc == $2)) || {
    echo "--- stdout" >&2
    cat "$out" >&2
    echo "--- stderr" >&2
    cat "$err" >&2
    fail "$1: exit status $rc, want $2"
  }
}
expect_err() {
  grep -qE -- "$2" "$err" || {
    cat "$err" >&2
    fail "$1: stderr lacks /$2/"
  }
}
# pids_gone FILE: every "[r] pid=N" in FILE names a process that is gone.
pids_gone() {
  local pid
  for pid in $(sed -n 's/^\[[0-9]*\] pid=//p' "$1"); do
    ! kill -0 "$pid" 2>/dev/null || fail "rank process $pid still exists"
  done
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }

echo "== prefixes, whole lines, partial lines"
run lines -n 4 -- "$HELPER" lines=300 errlines=100 partial=tail-%r
expect_rc lines 0
# Every stdout line is whole and carries its own rank's prefix.
bad="$(grep -cvE '^\[([0-3])\] (rank \1 line [0-9]+ part-b|tail-\1)$' "$out" || true)"
((bad == 0)) || {
  grep -vE '^\[([0-3])\] (rank \1 line [0-9]+ part-b|tail-\1)$' "$out" | head >&2
  fail "lines: $bad malformed or interleaved stdout lines"
}
bad="$(grep -cvE '^\[([0-3])\] rank \1 err [0-9]+ part-b$' "$err" || true)"
((bad == 0)) || {
  head "$err" >&2
  fail "lines: $bad malformed stderr lines (or launcher messages on success)"
}
for r in 0 1 2 3; do
  n="$(grep -c "^\[$r\] rank $r line " "$out")"
  ((n == 300)) || fail "lines: rank $r has $n stdout lines, want 300"
  n="$(grep -c "^\[$r\] rank $r err " "$err")"
  ((n == 100)) || fail "lines: rank $r has $n stderr lines, want 100"
  # In order within a rank.
  seq_ok="$(grep "^\[$r\] rank $r line " "$out" | awk '{ if ($5 != NR - 1) bad = 1 } END { print bad ? "no" : "yes" }')"
  [[ "$seq_ok" == yes ]] || fail "lines: rank $r's lines are out of order"
  # The partial last line is flushed at EOF, as a line of its own.
  grep -qx "\[$r\] tail-$r" "$out" || fail "lines: rank $r's partial line 'tail-$r' missing"
done

echo "== bootstrap environment"
PAGEWIRE_RANK=99 PAGEWIRE_SECRET=stale run env -n 3 "$HELPER" env
expect_rc env 0
for r in 0 1 2; do
  grep -qx "\[$r\] PAGEWIRE_RANK=$r" "$out" || fail "env: rank $r lacks PAGEWIRE_RANK=$r"
  grep -qx "\[$r\] PAGEWIRE_NRANKS=3" "$out" || fail "env: rank $r lacks PAGEWIRE_NRANKS=3"
  grep -qx "\[$r\] PAGEWIRE_HOST=127.0.0.1" "$out" || fail "env: rank $r lacks PAGEWIRE_HOST=127.0.0.1"
done
(($(grep -c 'PAGEWIRE_RANK=' "$out") == 3)) || fail "env: PAGEWIRE_RANK set more than once per rank"
for var in COORDINATOR CLUSTER_ID SECRET; do
  n="$(sed -n "s/^\[[0-9]\] PAGEWIRE_$var=//p" "$out" | sort -u | wc -l)"
  ((n == 1)) || fail "env: PAGEWIRE_$var differs between ranks"
done
grep -qE '^\[0\] PAGEWIRE_COORDINATOR=127\.0\.0\.1:[0-9]+$' "$out" || fail "env: bad PAGEWIRE_COORDINATOR"
grep -qE '^\[0\] PAGEWIRE_CLUSTER_ID=[0-9a-f]{32}$' "$out" || fail "env: bad PAGEWIRE_CLUSTER_ID"
grep -qE '^\[0\] PAGEWIRE_SECRET=[0-9a-f]{64}$' "$out" || fail "env: bad or stale PAGEWIRE_SECRET"
first_id="$(sed -n 's/^\[0\] PAGEWIRE_CLUSTER_ID=//p' "$out")"
first_secret="$(sed -n 's/^\[0\] PAGEWIRE_SECRET=//p' "$out")"
run env2 -n 1 --coordinator-port 4567 --secret s3cret "$HELPER" env
expect_rc env2 0
grep -qx '\[0\] PAGEWIRE_COORDINATOR=127.0.0.1:4567' "$out" || fail "env2: --coordinator-port ignored"
grep -qx '\[0\] PAGEWIRE_SECRET=s3cret' "$out" || fail "env2: --secret ignored"
run env3 -n 1 "$HELPER" env
[[ "$(sed -n 's/^\[0\] PAGEWIRE_CLUSTER_ID=//p' "$out")" != "$first_id" ]] ||
  fail "env3: PAGEWIRE_CLUSTER_ID is not random per job"
[[ "$(sed -n 's/^\[0\] PAGEWIRE_SECRET=//p' "$out")" != "$first_secret" ]] ||
  fail "env3: PAGEWIRE_SECRET is not random per job"

echo "== exit code propagation"
run exit3 -n 3 "$HELPER" 1:exit=3
expect_rc exit3 3
expect_err exit3 '^pagewire-run: rank 1 \(pid [0-9]+\) exited with status 3$'

# Ranks 0, 1 and 3 would block forever; rank 2 kills itself once they are
# all blocked (a FIFO barrier, so no sleeps).
echo "== signal 9: report, prompt clean end of the other ranks"
fifo="$tmp/barrier"
rm -f "$fifo"
mkfifo "$fifo"
start="$(now_ms)"
run kill9 -n 4 --grace-ms 60000 "$HELPER" pid 0:arrive="$fifo" 1:arrive="$fifo" \
  3:arrive="$fifo" 2:await="$fifo":3 2:signal=9 block
elapsed=$(($(now_ms) - start))
expect_rc kill9 137
expect_err kill9 '^pagewire-run: rank 2 \(pid [0-9]+\) killed by signal 9 \(Killed\)$'
expect_err kill9 'sending SIGTERM to 3 remaining rank\(s\)'
! grep -q 'SIGKILL;\|sending SIGKILL' "$err" || fail "kill9: ranks that die on SIGTERM were SIGKILLed"
# The grace period is 60 s: ending well before it means nobody waited on it.
((elapsed < 30000)) || fail "kill9: pagewire-run took ${elapsed} ms to end the job"
(($(grep -c 'pid=' "$out") == 4)) || fail "kill9: not every rank printed its pid"
pids_gone "$out"
echo "   ended in ${elapsed} ms"

echo "== SIGKILL after the grace period for ranks that ignore SIGTERM"
rm -f "$fifo"
mkfifo "$fifo"
run grace -n 4 --grace-ms 300 "$HELPER" pid ignore-term 0:arrive="$fifo" 1:arrive="$fifo" \
  3:arrive="$fifo" 2:await="$fifo":3 2:exit=7 block
expect_rc grace 7
expect_err grace '^pagewire-run: rank 2 \(pid [0-9]+\) exited with status 7$'
for r in 0 1 3; do
  expect_err grace "^pagewire-run: rank $r \(pid [0-9]+\) still running 300 ms after SIGTERM; sending SIGKILL$"
done
pids_gone "$out"

echo "== SIGTERM to pagewire-run is forwarded to the ranks"
rm -f "$fifo"
mkfifo "$fifo"
set +e
"$RUN" -n 3 "$HELPER" pid arrive="$fifo" block >"$out" 2>"$err" &
launcher=$!
# Wait (no clock) until all three ranks are blocked.
timeout "$HANG_LIMIT" head -c 3 "$fifo" >/dev/null || fail "forward: the ranks never reached the barrier"
kill -TERM "$launcher"
timeout "$HANG_LIMIT" tail --pid="$launcher" -f /dev/null ||
  fail "forward: pagewire-run did not end after SIGTERM"
wait "$launcher"
rc=$?
set -e
expect_rc forward 143
expect_err forward '^pagewire-run: received SIGTERM$'
expect_err forward 'sending SIGTERM to 3 remaining rank\(s\)'
pids_gone "$out"

echo "== a closed stdout reaches the ranks as SIGPIPE, as in a shell pipeline"
set +e
timeout -k 5 "$HANG_LIMIT" "$RUN" -n 2 "$HELPER" lines=1000000000 2>"$err" | head -n 1 >"$out"
rc=${PIPESTATUS[0]}
set -e
((rc != 124)) || fail "pipe: pagewire-run kept running after its stdout was closed"
expect_rc pipe 141
expect_err pipe '^pagewire-run: rank [01] \(pid [0-9]+\) killed by signal 13 \(Broken pipe\)$'

echo "== a rank that cannot be started"
printf '#!/nonexistent/interpreter\n' >"$tmp/badinterp"
chmod +x "$tmp/badinterp"
run badinterp -n 2 "$tmp/badinterp"
expect_rc badinterp 127
expect_err badinterp "^pagewire-run: rank 0 \(pid [0-9]+\) could not start: execve $tmp/badinterp: No such file or directory$"

echo "== bad usage"
printf 'echo hi\n' >"$tmp/notexec"
chmod -x "$tmp/notexec"
check_usage() {
  local want="$1"
  shift
  run usage "$@"
  expect_rc "usage '$*'" 2
  expect_err "usage '$*'" "$want"
  [[ ! -s "$out" ]] || fail "usage '$*': wrote to stdout"
}
check_usage 'missing -n N \(the number of ranks\)'
check_usage 'missing -n N' "$HELPER"
check_usage '-n must be between 1 and 4096, got 0' -n 0 "$HELPER"
check_usage "-n needs an integer, got 'x'" -n x "$HELPER"
check_usage '-n needs a value' -n
check_usage 'missing the program to run' -n 2
check_usage 'missing the program to run' -n 2 --
check_usage "unknown option '--frobnicate'" -n 2 --frobnicate "$HELPER"
check_usage "program 'no-such-program-pw' not found in PATH" -n 2 no-such-program-pw
check_usage "program '$tmp/missing' not found" -n 2 "$tmp/missing"
check_usage "program '$tmp/notexec' is not executable" -n 2 "$tmp/notexec"
check_usage "program '$tmp' is not a regular file" -n 2 "$tmp"
check_usage "--grace-ms must be between 0 and" -n 2 --grace-ms -1 "$HELPER"
check_usage "--coordinator-port must be between 1 and 65535" -n 2 --coordinator-port 70000 "$HELPER"
check_usage "--secret must not be empty" -n 2 --secret= "$HELPER"
check_usage "--netns prefix 'a/b' may only contain" -n 2 --netns a/b "$HELPER"
check_usage "--bind-to socket is not a binding; use core" -n 2 --bind-to socket "$HELPER"

# --bind-to core: rank i runs on the i-th usable CPU, round robin; none and
# the default leave every rank the launcher's whole set.
mapfile -t usable < <(taskset -c -p $$ | sed 's/.*: //' | tr ',' '\n' |
  awk -F- '{ for (c = $1; c <= ($2 == "" ? $1 : $2); c++) print c }')
n=$((${#usable[@]} + 1))  # one more rank than CPUs: the first CPU twice
run bind -n "$n" --bind-to core -- bash -c 'grep Cpus_allowed_list /proc/self/status'
expect_rc bind 0
for ((r = 0; r < n; r++)); do
  want=${usable[r % ${#usable[@]}]}
  grep -qE "^\[$r\] Cpus_allowed_list:\s+$want\$" "$out" ||
    { cat "$out" >&2; fail "bind: rank $r is not bound to CPU $want alone"; }
done
expect_err bind "$n ranks on $((n - 1)) usable CPUs; ranks share cores round robin"
all=$(grep Cpus_allowed_list /proc/self/status | awk '{ print $2 }')
run nobind -n 2 --bind-to none -- bash -c 'grep Cpus_allowed_list /proc/self/status'
expect_rc nobind 0
[[ $(grep -c "Cpus_allowed_list:\s*$all\$" "$out") == 2 ]] ||
  { cat "$out" >&2; fail "nobind: a rank lost CPUs ($all)"; }

run help --help
expect_rc help 0
grep -q '^usage: pagewire-run -n N' "$out" || fail "--help: no usage on stdout"

echo "launcher_test: PASS"
