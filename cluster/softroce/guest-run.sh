#!/usr/bin/bash
# guest-run.sh - stage 2 of the soft-RoCE guest, started by init.sh once the
# host's /usr and /etc are mounted. Runs under the host's real bash with the
# host's real tools (kmod's modprobe, iproute2's ip and rdma):
#   1. mounts the scratch filesystems and the extra read-only shares listed in
#      /pw-out/vm.conf, each at the same path as on the host;
#   2. loads rdma_rxe and friends, builds the network and the rxe devices:
#        rxe0  on pwdummy0 (10.77.0.1)             single-device tests
#        rxe1  on pwveth1  (10.77.1.1) --veth--   rxe2 on pwveth2 (10.77.1.2)
#      every netdev at MTU 9000 so each rxe port runs a 4096-byte RoCE MTU,
#      and GID index 1 of each is its RoCEv2 IPv4-mapped address;
#   3. runs the command lines of /pw-out/job.cmds in order (the steps, named
#      by the same lines of /pw-out/job.names), each one's output appended to
#      /pw-out/job.log between delimiter lines naming the step, its status to
#      /pw-out/results ("i status seconds name");
#   4. writes /pw-out/status ("rc=N ...") and /pw-out/dmesg.txt, powers off.
# The host (vm-run.sh) streams job.log while the VM runs and trusts only
# /pw-out/status: a VM that stops without writing it has failed.
set -uo pipefail

readonly OUT=/pw-out
readonly BB=/.pw/busybox
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LC_ALL=C TERM=dumb

log() { echo "softroce-vm: $*" >>"$OUT/job.log"; }

finish() {
  local rc=$1
  shift
  dmesg >"$OUT/dmesg.txt" 2>&1
  echo "rc=$rc $*" >"$OUT/status.tmp" && mv "$OUT/status.tmp" "$OUT/status"
  sync
  $BB poweroff -f
  sleep 5
  echo o >/proc/sysrq-trigger
}

setup_fail() {
  log "SETUP FAILED: $*"
  finish 125 "setup: $*"
}

run_or_fail() {
  local out
  if ! out="$("$@" 2>&1)"; then
    setup_fail "'$*' failed: $out"
  fi
}

# --- 1. filesystems ---------------------------------------------------------
mkdir -p /tmp /run /var /dev/pts /dev/shm /root
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=0755 tmpfs /var
mkdir -p /var/tmp /var/log /run/lock && chmod 1777 /var/tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
ln -sf /proc/self/fd /dev/fd 2>/dev/null
mkdir -p "$OUT/artifacts"

[[ -r "$OUT/vm.conf" ]] || setup_fail "no $OUT/vm.conf"
# shellcheck source=/dev/null
source "$OUT/vm.conf"

log "guest up after $(cut -d' ' -f1 /proc/uptime) s (kernel $(uname -r), $(nproc) CPUs)"

readonly RO_OPTS=trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro
for entry in "${PW_SHARES[@]}"; do
  tag="${entry%% *}"
  path="${entry#* }"
  mkdir -p "$path" 2>/dev/null || setup_fail "cannot create mount point $path"
  run_or_fail mount -t 9p -o "$RO_OPTS" "$tag" "$path"
done

# --- 2. modules, network, rxe devices --------------------------------------
# Few processes on purpose: every exec under TCG, with its libraries read
# over 9p, costs tens of milliseconds. So one modprobe, sysctl, ip -batch
# and rdma -batch each, fixed MAC addresses instead of queries.
run_or_fail modprobe -a rdma_rxe ib_uverbs dummy veth
log "modules loaded after $(cut -d' ' -f1 /proc/uptime) s"

# Deterministic GID tables: no IPv6 addresses, so GID 0 is the default
# (MAC-derived) GID and GID 1 the IPv4-mapped one. No reverse-path filter and
# accept_local, so a packet from one local address to another can arrive on
# a veth instead of being short-circuited through lo.
run_or_fail sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 \
  net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
  net.ipv4.conf.all.accept_local=1 net.ipv4.conf.default.accept_local=1

# rxe's RoCE MTU is the largest IB MTU that fits the netdev's MTU minus the
# RoCEv2 headers: 9000 gives the 4096 maximum. Set before `rdma link add`.
readonly NET_MTU=9000
readonly MAC_DUMMY=02:00:0a:4d:00:01 MAC_VETH1=02:00:0a:4d:01:01 MAC_VETH2=02:00:0a:4d:01:02
# Both veth ends live in this one namespace (rxe in 6.1 has no netns
# support), so route by output interface: a packet rxe1 sends out of pwveth1
# to 10.77.1.2 must leave through the wire, not through the local table. The
# local table moves behind those rules; incoming packets (no output
# interface) still reach it and are delivered locally. Static neighbours:
# no ARP to go wrong.
net_script="
link set lo up
link add pwdummy0 address $MAC_DUMMY mtu $NET_MTU type dummy
addr add 10.77.0.1/24 dev pwdummy0
link set pwdummy0 up
link add pwveth1 address $MAC_VETH1 mtu $NET_MTU type veth peer name pwveth2 address $MAC_VETH2 mtu $NET_MTU
addr add 10.77.1.1/24 dev pwveth1
addr add 10.77.1.2/24 dev pwveth2
link set pwveth1 up
link set pwveth2 up
rule add pref 100 oif pwveth1 lookup 101
rule add pref 101 oif pwveth2 lookup 102
route add 10.77.1.0/24 dev pwveth1 src 10.77.1.1 table 101
route add 10.77.1.0/24 dev pwveth2 src 10.77.1.2 table 102
rule add pref 1000 lookup local
rule del pref 0 lookup local
neigh replace 10.77.1.2 lladdr $MAC_VETH2 dev pwveth1 nud permanent
neigh replace 10.77.1.1 lladdr $MAC_VETH1 dev pwveth2 nud permanent
"
run_or_fail ip -batch - <<<"$net_script"
run_or_fail sysctl -qw \
  net.ipv4.conf.pwdummy0.rp_filter=0 net.ipv4.conf.pwdummy0.accept_local=1 \
  net.ipv4.conf.pwveth1.rp_filter=0 net.ipv4.conf.pwveth1.accept_local=1 \
  net.ipv4.conf.pwveth2.rp_filter=0 net.ipv4.conf.pwveth2.accept_local=1
run_or_fail rdma -b - <<<"link add rxe0 type rxe netdev pwdummy0
link add rxe1 type rxe netdev pwveth1
link add rxe2 type rxe netdev pwveth2"

# Wait for each port to come up with its IPv4 GID at index 1 (the GID cache
# is filled by a kernel work item after the link is added).
readonly GID_INDEX=1
declare -A RXE_IP=([rxe0]=10.77.0.1 [rxe1]=10.77.1.1 [rxe2]=10.77.1.2)
declare -A RXE_NETDEV=([rxe0]=pwdummy0 [rxe1]=pwveth1 [rxe2]=pwveth2)
for dev in rxe0 rxe1 rxe2; do
  port=/sys/class/infiniband/$dev/ports/1
  ip4="${RXE_IP[$dev]}"
  printf -v want '0000:0000:0000:0000:0000:ffff:%02x%02x:%02x%02x' ${ip4//./ }
  state="" gid="" gtype=""
  for _ in {1..100}; do
    read -r state <"$port/state" 2>/dev/null
    read -r gid <"$port/gids/$GID_INDEX" 2>/dev/null
    [[ "$state" == *ACTIVE* && "$gid" == "$want" ]] && break
    sleep 0.1
  done
  read -r gtype <"$port/gid_attrs/types/$GID_INDEX" 2>/dev/null
  [[ "$state" == *ACTIVE* ]] || setup_fail "$dev port state is '$state', want ACTIVE"
  [[ "$gid" == "$want" ]] || setup_fail "$dev GID $GID_INDEX is '$gid', want $want"
  log "$dev on ${RXE_NETDEV[$dev]} ip $ip4 gid[$GID_INDEX] $gid ($gtype) $state"
done

export PAGEWIRE_VM=1
export PAGEWIRE_VM_OUT="$OUT/artifacts"
export PAGEWIRE_RXE_GID_INDEX=$GID_INDEX
export PAGEWIRE_RXE_LOCAL_DEV=rxe0 PAGEWIRE_RXE_LOCAL_IP=10.77.0.1
export PAGEWIRE_RXE_A_DEV=rxe1 PAGEWIRE_RXE_A_IP=10.77.1.1
export PAGEWIRE_RXE_B_DEV=rxe2 PAGEWIRE_RXE_B_IP=10.77.1.2
for kv in "${PW_ENV[@]}"; do
  export "${kv?}"
done
export TMPDIR=/tmp

log "setup done after $(cut -d' ' -f1 /proc/uptime) s"

# --- 3. the commands -------------------------------------------------------
mapfile -t cmds <"$OUT/job.cmds"
names=()
[[ -r "$OUT/job.names" ]] && mapfile -t names <"$OUT/job.names"
n=${#cmds[@]}
first_fail=0
: >"$OUT/results"
for ((i = 1; i <= n; i++)); do
  line="${cmds[i - 1]}"
  name="${names[i - 1]:-step$i}"
  log "[$i/$n] BEGIN step $name \$ $line"
  t0=$(date +%s%N)
  tmp="/tmp/pw-cmd-$i"
  mkdir -p "$tmp"
  (
    cd "$PW_CWD" 2>/dev/null || cd /
    export TEST_TMPDIR="$tmp"
    exec bash -c "$line"
  ) </dev/null >>"$OUT/job.log" 2>&1
  rc=$?
  t1=$(date +%s%N)
  secs="$(((t1 - t0) / 1000000000)).$(printf '%03d' $((((t1 - t0) / 1000000) % 1000)))"
  log "[$i/$n] END step $name exit=$rc after ${secs} s"
  echo "$i $rc $secs $name" >>"$OUT/results"
  if ((rc != 0 && first_fail == 0)); then
    first_fail=$rc
    if [[ "$PW_STOP_ON_FAILURE" == 1 ]]; then
      log "stopping after the first failure (--stop-on-failure)"
      break
    fi
  fi
done

# --- 4. debug shell, report -----------------------------------------------
if [[ "$PW_SHELL" == 1 ]]; then
  {
    echo
    echo "softroce-vm: debug shell (exit it to power off). rxe0/pwdummy0 10.77.0.1,"
    echo "softroce-vm: rxe1/pwveth1 10.77.1.1 <-> rxe2/pwveth2 10.77.1.2, GID index 1."
    echo "softroce-vm: the run's files are in $OUT (job.log, results)."
  } >/dev/ttyS0
  cd "$PW_CWD" 2>/dev/null || cd /
  TERM=linux PS1='softroce-vm:\w# ' setsid -w -c bash --norc -i </dev/ttyS0 >/dev/ttyS0 2>&1
fi

log "done: $((n)) command(s), first failing status $first_fail, uptime $(cut -d' ' -f1 /proc/uptime) s"
finish "$first_fail" "commands=$n"
