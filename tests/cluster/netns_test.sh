#!/usr/bin/env bash
# netns_test.sh - netns-hosts.sh and pagewire-run --netns for real: four
# namespaces on one bridge, TCP from namespace 0 to namespace 3, four ranks
# each inside its namespace with its own PAGEWIRE_HOST, idempotent up/down,
# and the root namespace's links and routes left exactly as they were.
#
# Needs root and network namespaces. Without them it prints "SKIP: <why>"
# and exits 0, unless PAGEWIRE_REQUIRE_NETNS=1 (then that is a failure).
# Runs unsandboxed (tags "local" in BUILD): namespaces made inside Bazel's
# sandbox would live in its private mount namespace.
set -euo pipefail

fail() {
  echo "netns_test: FAIL: $*" >&2
  exit 1
}
skip() {
  if [[ "${PAGEWIRE_REQUIRE_NETNS:-}" == 1 ]]; then
    fail "cannot run ($*) and PAGEWIRE_REQUIRE_NETNS=1"
  fi
  echo "netns_test: SKIP: $*"
  exit 0
}

runfiles="${RUNFILES_DIR:-${TEST_SRCDIR:?not run under bazel test}}"
ws="$runfiles/pagewire"
NETNS="$ws/cluster/netns/netns-hosts.sh"
RUN="$ws/cluster/launcher/pagewire-run"
PROBE="$ws/tests/cluster/tcp_probe"
readonly HANG_LIMIT=120

[[ "$(id -u)" == 0 ]] || skip "not root (uid $(id -u)); network namespaces need root"
command -v ip >/dev/null || skip "iproute2's 'ip' is not installed"

# A prefix no other run uses at the same time.
prefix="pwt$$"
probe_ns="${prefix}probe"
why="$(ip netns add "$probe_ns" 2>&1)" ||
  skip "cannot create a network namespace here (ip netns add: $why); inside Bazel's sandbox this needs tags = [\"local\"]"
ip netns delete "$probe_ns"

cleanup() {
  bash "$NETNS" down "$prefix" >/dev/null 2>&1 || true
}
trap cleanup EXIT

root_links() { ip -o link show | awk -F': ' '{print $2}' | sort; }
root_state() {
  root_links
  ip route show table all 2>/dev/null || ip route show
}
before="$(root_state)"

echo "== up $prefix 4"
bash "$NETNS" up "$prefix" 4 || fail "up failed"
hosts_file="/run/pagewire-netns/$prefix.hosts"
expected=$'0 10.213.0.1\n1 10.213.0.2\n2 10.213.0.3\n3 10.213.0.4'
[[ "$(cat "$hosts_file")" == "$expected" ]] || fail "unexpected $hosts_file: $(cat "$hosts_file")"
for ns in "${prefix}0" "${prefix}1" "${prefix}2" "${prefix}3" "${prefix}hub"; do
  [[ -e "/run/netns/$ns" ]] || fail "namespace $ns missing"
done
for i in 0 1 2 3; do
  got="$(ip -n "$prefix$i" -4 -o addr show dev eth0 | awk '{print $4}')"
  [[ "$got" == "10.213.0.$((i + 1))/24" ]] || fail "$prefix$i eth0 has '$got'"
  ip -n "$prefix$i" link show lo | grep -q 'UP' || fail "lo is down in $prefix$i"
done
[[ "$(root_state)" == "$before" ]] || fail "up changed the root namespace's links or routes"

echo "== up again (idempotent)"
again="$(bash "$NETNS" up "$prefix" 4)" || fail "second up failed"
[[ "$again" == *"already up"* ]] || fail "second up did not report 'already up': $again"

echo "== TCP from ${prefix}0 to ${prefix}3"
coproc server { ip netns exec "${prefix}3" "$PROBE" serve 10.213.0.4; }
# shellcheck disable=SC2154  # server_PID is set by coproc
server_pid=$server_PID
read -r -t "$HANG_LIMIT" port <&"${server[0]}" || fail "tcp_probe did not start listening"
[[ "$port" =~ ^[0-9]+$ ]] || fail "tcp_probe printed '$port', not a port"
reply="$(timeout "$HANG_LIMIT" ip netns exec "${prefix}0" bash -c '
  exec 3<>"/dev/tcp/10.213.0.4/$1" || exit 1
  echo "ping from $(ip -4 -o addr show dev eth0 | awk "{print \$4}")" >&3
  read -r reply <&3
  echo "$reply"' _ "$port")" || fail "TCP connect from ${prefix}0 to 10.213.0.4:$port failed"
[[ "$reply" == "pong ping from 10.213.0.1/24" ]] || fail "TCP reply was '$reply'"
wait "$server_pid" || fail "tcp_probe failed"

echo "== pagewire-run --netns $prefix: 4 ranks, one per namespace"
out="$TEST_TMPDIR/netns.out"
err="$TEST_TMPDIR/netns.err"
timeout "$HANG_LIMIT" "$RUN" -n 4 --netns "$prefix" -- bash -c '
  echo "host=$PAGEWIRE_HOST"
  echo "coordinator=$PAGEWIRE_COORDINATOR"
  echo "addr=$(ip -4 -o addr show dev eth0 | awk "{print \$4}")"
  echo "links=$(ip -o link show | wc -l)"' >"$out" 2>"$err" ||
  {
    cat "$err" >&2
    fail "pagewire-run --netns exited with $?"
  }
cat "$out"
for i in 0 1 2 3; do
  grep -qx "\[$i\] host=10.213.0.$((i + 1))" "$out" || fail "rank $i: wrong PAGEWIRE_HOST"
  grep -qx "\[$i\] addr=10.213.0.$((i + 1))/24" "$out" || fail "rank $i: not inside ${prefix}$i"
  grep -qE "^\[$i\] coordinator=10\.213\.0\.1:[0-9]+$" "$out" || fail "rank $i: PAGEWIRE_COORDINATOR is not on rank 0's address"
  # lo and eth0 only: the rank does not see the root namespace's links.
  grep -qx "\[$i\] links=2" "$out" || fail "rank $i sees links other than lo and eth0"
done
(($(sed -n 's/^\[[0-9]\] coordinator=//p' "$out" | sort -u | wc -l) == 1)) ||
  fail "ranks disagree on PAGEWIRE_COORDINATOR"

echo "== pagewire-run --netns with too few namespaces"
set +e
timeout "$HANG_LIMIT" "$RUN" -n 5 --netns "$prefix" true >"$out" 2>"$err"
rc=$?
set -e
((rc == 2)) || fail "-n 5 with 4 namespaces: exit status $rc, want 2"
grep -q "needs namespace ${prefix}4" "$err" || fail "-n 5 with 4 namespaces: message: $(cat "$err")"
grep -q "netns-hosts.sh up $prefix 5" "$err" || fail "-n 5 with 4 namespaces: message lacks the fix"

echo "== down, twice"
bash "$NETNS" down "$prefix" || fail "down failed"
for ns in "${prefix}0" "${prefix}1" "${prefix}2" "${prefix}3" "${prefix}hub"; do
  [[ ! -e "/run/netns/$ns" ]] || fail "namespace $ns still exists after down"
done
[[ ! -e "$hosts_file" && ! -e "/run/pagewire-netns/$prefix.state" ]] || fail "state files left after down"
bash "$NETNS" down "$prefix" || fail "second down failed"
[[ "$(root_state)" == "$before" ]] || fail "the root namespace's links or routes changed"

echo "== pagewire-run --netns after down"
set +e
timeout "$HANG_LIMIT" "$RUN" -n 2 --netns "$prefix" true >"$out" 2>"$err"
rc=$?
set -e
((rc == 2)) || fail "--netns after down: exit status $rc, want 2"
grep -q "netns-hosts.sh up $prefix 2" "$err" || fail "--netns after down: message lacks the fix: $(cat "$err")"

echo "== bad input to netns-hosts.sh"
set +e
msg="$(bash "$NETNS" up "$prefix" 0 2>&1)"
rc1=$?
msg2="$(PAGEWIRE_NETNS_SUBNET=10.1.2.3/16 bash "$NETNS" up "$prefix" 2 2>&1)"
rc2=$?
msg3="$(bash "$NETNS" up 'bad/prefix' 2 2>&1)"
rc3=$?
set -e
((rc1 != 0)) && [[ "$msg" == *"bad N '0'"* ]] || fail "up N=0: rc $rc1, '$msg'"
((rc2 != 0)) && [[ "$msg2" == *"not of the form A.B.C.0/24"* ]] || fail "bad subnet: rc $rc2, '$msg2'"
((rc3 != 0)) && [[ "$msg3" == *"bad PREFIX"* ]] || fail "bad prefix: rc $rc3, '$msg3'"
[[ ! -e "/run/netns/${prefix}hub" ]] || fail "a failed up left namespaces behind"

echo "== custom subnet"
PAGEWIRE_NETNS_SUBNET=10.214.7.0/24 bash "$NETNS" up "$prefix" 2 >/dev/null || fail "up with a custom subnet failed"
[[ "$(cat "$hosts_file")" == $'0 10.214.7.1\n1 10.214.7.2' ]] || fail "custom subnet map: $(cat "$hosts_file")"
bash "$NETNS" down "$prefix" >/dev/null

echo "netns_test: PASS"
