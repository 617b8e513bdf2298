#!/usr/bin/env bash
# smoke.sh - the soft-RoCE smoke suite. Runs INSIDE the VM that
# cluster/softroce/vm-run.sh boots (step "perftest" of
# //tests/softroce:verbs_suite_vm_test):
#   1. ibv_devices lists rxe0, rxe1, rxe2 and ibv_devinfo shows each port
#      PORT_ACTIVE with active_mtu 4096;
#   2. perftest over the veth "wire": ib_read_lat -s 4096 and ib_read_bw
#      -s 4096, server on rxe2 (10.77.1.2), client on rxe1, GID index 1;
#   3. ib_read_lat and ib_read_bw -s 4096 on rxe0 alone (the single-device
#      setup, which bench/remote_fault_vm.sh compares the runtime against).
# `smoke.sh --rxe0-latency TAG [PORT]` runs only ib_read_lat -s 4096 on
# rxe0 (handshake on PORT, default 18519) and reports it as
# ib_read_lat_4096_rxe0_TAG (remote_fault_vm.sh measures the
# floor right before and after Pagewire's runs).
# Prints one machine-readable line per perftest run, e.g.
#   softroce: ib_read_lat_4096 t_typical_us=152.3 t_avg_us=160.1 p99_us=... ...
# and appends the same lines to $PAGEWIRE_VM_OUT/perftest.txt, so benchmarks
# can compare against them.
set -euo pipefail

fail() {
  echo "smoke: FAIL: $*"
  exit 1
}
[[ "${PAGEWIRE_VM:-}" == 1 ]] || fail "run me inside the soft-RoCE VM (cluster/softroce/vm-run.sh)"

# Iterations: enough for a stable typical latency, few enough to stay quick
# at ~150 us per 4 KiB READ and ~15 MB/s under TCG.
readonly LAT_ITERS=1000
readonly BW_ITERS=2000
readonly GID="${PAGEWIRE_RXE_GID_INDEX:-1}"
results="${PAGEWIRE_VM_OUT:-/tmp}/perftest.txt"

rxe0_latency() {
  local name=$1 port=$2
  run_perftest "$name" "$port" rxe0 rxe0 10.77.0.1 ib_read_lat -s 4096 -n "$LAT_ITERS"
  read -r _ iters tmin tmax ttyp tavg tstd p99 p999 <<<"$row"
  report "$name t_typical_us=$ttyp t_avg_us=$tavg p99_us=$p99 iters=$iters devs=rxe0->rxe0"
}

# Waits until something listens on TCP port $1 (perftest's handshake
# socket), so the client never races the server's start.
wait_listen() {
  local port=$1 pid=$2
  for _ in $(seq 200); do
    ss -ltnH "sport = :$port" | grep -q . && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# run_perftest NAME PORT SERVER_DEV CLIENT_DEV SERVER_IP TOOL ARGS...
# Prints the client's output; leaves its result row in $row.
run_perftest() {
  local name=$1 port=$2 sdev=$3 cdev=$4 sip=$5 tool=$6
  shift 6
  local slog="/tmp/$name.server.log" clog="/tmp/$name.client.log" spid
  echo "== $name: $tool $* (server $sdev, client $cdev -> $sip)"
  "$tool" -d "$sdev" -x "$GID" -p "$port" -F "$@" >"$slog" 2>&1 &
  spid=$!
  wait_listen "$port" "$spid" || { cat "$slog"; fail "$name: server did not start"; }
  if ! "$tool" -d "$cdev" -x "$GID" -p "$port" -F "$@" "$sip" >"$clog" 2>&1; then
    cat "$clog"
    echo "-- server:"
    cat "$slog"
    fail "$name: client failed"
  fi
  wait "$spid" || { cat "$slog"; fail "$name: server failed"; }
  cat "$clog"
  # The result row is the one that starts with the message size.
  row="$(awk '$1 == 4096 && NF >= 5 { print; exit }' "$clog")"
  [[ -n "$row" ]] || fail "$name: no result row in the client's output"
}

report() {
  echo "softroce: $*"
  echo "softroce: $*" >>"$results"
}

if [[ "${1:-}" == --rxe0-latency ]]; then
  [[ "${2:-}" =~ ^[a-z0-9]+$ ]] || fail "--rxe0-latency needs a tag of lower-case letters and digits"
  [[ "${3:-18519}" =~ ^[0-9]+$ ]] || fail "--rxe0-latency TAG PORT: '$3' is not a port number"
  rxe0_latency "ib_read_lat_4096_rxe0_$2" "${3:-18519}"
  exit 0
fi
[[ $# -eq 0 ]] || fail "unknown arguments '$*'; usage: smoke.sh [--rxe0-latency TAG [PORT]]"

echo "== ibv_devices"
ibv_devices
for dev in rxe0 rxe1 rxe2; do
  info="$(ibv_devinfo -d "$dev")" || fail "ibv_devinfo -d $dev failed"
  state="$(awk '$1 == "state:" { print $2 }' <<<"$info")"
  mtu="$(awk '$1 == "active_mtu:" { print $2 }' <<<"$info")"
  echo "$dev: state $state active_mtu $mtu"
  [[ "$state" == PORT_ACTIVE ]] || fail "$dev state is '$state', want PORT_ACTIVE"
  [[ "$mtu" == 4096 ]] || fail "$dev active_mtu is '$mtu', want 4096"
done

run_perftest ib_read_lat_4096 18515 rxe2 rxe1 10.77.1.2 ib_read_lat -s 4096 -n "$LAT_ITERS"
# #bytes #iterations t_min t_max t_typical t_avg t_stdev p99 p99.9 (usec)
read -r _ iters tmin tmax ttyp tavg tstd p99 p999 <<<"$row"
report "ib_read_lat_4096 t_typical_us=$ttyp t_avg_us=$tavg t_min_us=$tmin t_max_us=$tmax p99_us=$p99 p99.9_us=$p999 iters=$iters devs=rxe1->rxe2"

run_perftest ib_read_bw_4096 18516 rxe2 rxe1 10.77.1.2 ib_read_bw -s 4096 -n "$BW_ITERS"
# #bytes #iterations BW_peak BW_average MsgRate (MB/s, Mpps)
read -r _ iters bwpeak bwavg mpps <<<"$row"
report "ib_read_bw_4096 bw_avg_MBps=$bwavg bw_peak_MBps=$bwpeak msg_rate_Mpps=$mpps iters=$iters devs=rxe1->rxe2"

rxe0_latency ib_read_lat_4096_rxe0 18517

run_perftest ib_read_bw_4096_rxe0 18518 rxe0 rxe0 10.77.0.1 ib_read_bw -s 4096 -n "$BW_ITERS"
read -r _ iters bwpeak bwavg mpps <<<"$row"
report "ib_read_bw_4096_rxe0 bw_avg_MBps=$bwavg bw_peak_MBps=$bwpeak msg_rate_Mpps=$mpps iters=$iters devs=rxe0->rxe0"

echo "smoke: PASS"
