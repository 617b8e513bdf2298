#!/usr/bin/env bash
# netns-hosts.sh - N "hosts" on one machine: N network namespaces on one L2
# segment, for running a Pagewire cluster over real (virtual) Ethernet.
#
#   netns-hosts.sh up PREFIX N     create PREFIX0..PREFIX<N-1> and PREFIXhub
#   netns-hosts.sh down PREFIX     remove them (idempotent)
#   netns-hosts.sh status PREFIX   print the address map, exit 1 if not up
#
# Layout: namespace PREFIXhub holds a Linux bridge br0; host namespace
# PREFIX<i> has eth0 = <subnet>.<i+1>/24, one end of a veth pair whose other
# end (port<i>) is a port of br0. lo is up everywhere. The veth pairs are
# created directly inside PREFIXhub and PREFIX<i> (ip -n ... netns ...), so
# no link ever appears in the root namespace, and the root namespace's
# interfaces and routes are never touched.
#
# State, in /run/pagewire-netns/:
#   PREFIX.hosts   "<i> <address>" per line; pagewire-run --netns reads it
#   PREFIX.state   the namespaces this script created for PREFIX, one a line,
#                  recorded as each is created; `down` deletes only these
#
# Environment:
#   PAGEWIRE_NETNS_SUBNET  the /24 to use, as A.B.C.0/24 (default
#                          10.213.0.0/24). Each PREFIX is its own segment,
#                          so several prefixes may share a subnet.
#
# Needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN), iproute2, and kernel support
# for network namespaces, veth and bridge.
set -euo pipefail

readonly STATE_DIR=/run/pagewire-netns
readonly NETNS_DIR=/run/netns
readonly DEFAULT_SUBNET=10.213.0.0/24
# Host addresses are <subnet>.1 .. <subnet>.254.
readonly MAX_HOSTS=254
# Namespace names are files in /run/netns; keep them short and plain. The
# same rule is in cluster/launcher/launch_options.cc.
readonly MAX_PREFIX=32

me="netns-hosts.sh"
die() {
  echo "$me: error: $*" >&2
  exit 1
}
usage() {
  cat >&2 <<EOF
usage: $me up PREFIX N      create N namespaces PREFIX0..PREFIX<N-1> on one L2 segment
       $me down PREFIX      remove everything 'up PREFIX' created (idempotent)
       $me status PREFIX    print PREFIX's address map ("<i> <address>")
environment: PAGEWIRE_NETNS_SUBNET=A.B.C.0/24 (default $DEFAULT_SUBNET)
EOF
  exit 2
}

check_prereqs() {
  [[ "$(id -u)" == 0 ]] ||
    die "must run as root (network namespaces need CAP_SYS_ADMIN); try: sudo $0 $*"
  command -v ip >/dev/null 2>&1 ||
    die "'ip' not found; install iproute2 (apt-get install iproute2)"
}

check_prefix() {
  local prefix="$1"
  [[ "$prefix" =~ ^[A-Za-z0-9_.-]+$ && ${#prefix} -le $MAX_PREFIX ]] ||
    die "bad PREFIX '$prefix': use 1 to $MAX_PREFIX letters, digits, '_', '.' or '-'"
}

# Prints A.B.C for the configured /24.
subnet_base() {
  local subnet="${PAGEWIRE_NETNS_SUBNET:-$DEFAULT_SUBNET}"
  local re='^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.0/24$'
  [[ "$subnet" =~ $re ]] ||
    die "PAGEWIRE_NETNS_SUBNET='$subnet' is not of the form A.B.C.0/24 (e.g. $DEFAULT_SUBNET)"
  local octet
  for octet in "${BASH_REMATCH[@]:1:3}"; do
    ((10#$octet <= 255)) ||
      die "PAGEWIRE_NETNS_SUBNET='$subnet' has an octet above 255"
  done
  echo "$((10#${BASH_REMATCH[1]})).$((10#${BASH_REMATCH[2]})).$((10#${BASH_REMATCH[3]}))"
}

netns_exists() { [[ -e "$NETNS_DIR/$1" ]]; }

# Deletes the namespaces listed in PREFIX.state, then the state files.
# Deleting a namespace deletes its end of each veth pair, which deletes the
# other end too; the bridge goes with the hub namespace.
down() {
  local prefix="$1"
  local state="$STATE_DIR/$prefix.state"
  if [[ ! -f "$state" ]]; then
    rm -f "$STATE_DIR/$prefix.hosts"
    echo "$me: nothing to remove for '$prefix'"
    return 0
  fi
  local ns failed=0
  while read -r ns; do
    [[ -n "$ns" ]] || continue
    if netns_exists "$ns"; then
      ip netns delete "$ns" || {
        echo "$me: error: could not delete namespace $ns" >&2
        failed=1
      }
    fi
  done <"$state"
  ((failed == 0)) || die "some namespaces of '$prefix' remain; see above, then run: $me down $prefix"
  rm -f "$state" "$STATE_DIR/$prefix.hosts"
  echo "$me: removed '$prefix'"
}

# True if PREFIX is up with exactly N hosts on the configured subnet.
is_up() {
  local prefix="$1" n="$2" base="$3"
  local hosts="$STATE_DIR/$prefix.hosts" i
  [[ -f "$hosts" && -f "$STATE_DIR/$prefix.state" ]] || return 1
  netns_exists "${prefix}hub" || return 1
  local expected=""
  for ((i = 0; i < n; i++)); do
    netns_exists "$prefix$i" || return 1
    expected+="$i $base.$((i + 1))"$'\n'
  done
  [[ "$(cat "$hosts")"$'\n' == "$expected" ]]
}

make_netns() {
  local ns="$1" prefix="$2"
  ! netns_exists "$ns" ||
    die "namespace $ns already exists but was not created by '$me up $prefix'; pick another PREFIX or remove it (ip netns delete $ns)"
  ip netns add "$ns" || die "ip netns add $ns failed (does the kernel support network namespaces?)"
  # Recorded at once, so `down` (or the failure trap) removes it.
  echo "$ns" >>"$STATE_DIR/$prefix.state"
  ip -n "$ns" link set lo up
}

undo_failed_up() {
  echo "$me: error: 'up $up_prefix' failed; removing what it created" >&2
  down "$up_prefix" >/dev/null 2>&1 || true
}

up() {
  local prefix="$1" n="$2"
  [[ "$n" =~ ^[0-9]+$ ]] && ((10#$n >= 1 && 10#$n <= MAX_HOSTS)) ||
    die "bad N '$n': need an integer from 1 to $MAX_HOSTS"
  n=$((10#$n))
  local base
  base="$(subnet_base)"
  mkdir -p "$STATE_DIR"

  if is_up "$prefix" "$n" "$base"; then
    echo "$me: '$prefix' is already up with $n hosts"
    cat "$STATE_DIR/$prefix.hosts"
    return 0
  fi
  if [[ -f "$STATE_DIR/$prefix.state" ]]; then
    echo "$me: '$prefix' exists with another layout or partly; recreating it"
    down "$prefix" >/dev/null
  fi

  # A failure part-way (set -e, or die) removes what was made so far.
  up_prefix="$prefix"
  trap undo_failed_up EXIT
  local hub="${prefix}hub" i ns
  make_netns "$hub" "$prefix"
  ip -n "$hub" link add br0 type bridge ||
    die "cannot create a bridge (is the 'bridge' kernel module available? modprobe bridge)"
  ip -n "$hub" link set br0 up
  for ((i = 0; i < n; i++)); do
    ns="$prefix$i"
    make_netns "$ns" "$prefix"
    ip -n "$hub" link add "port$i" type veth peer name eth0 netns "$ns" ||
      die "cannot create a veth pair (is the 'veth' kernel module available? modprobe veth)"
    ip -n "$hub" link set "port$i" master br0 up
    ip -n "$ns" addr add "$base.$((i + 1))/24" dev eth0
    ip -n "$ns" link set eth0 up
  done
  trap - EXIT

  local hosts="$STATE_DIR/$prefix.hosts"
  : >"$hosts.tmp"
  for ((i = 0; i < n; i++)); do
    echo "$i $base.$((i + 1))" >>"$hosts.tmp"
  done
  mv -f "$hosts.tmp" "$hosts"
  echo "$me: '$prefix' is up: $n hosts on $base.0/24, map in $hosts"
  cat "$hosts"
}

status() {
  local prefix="$1" hosts="$STATE_DIR/$1.hosts"
  [[ -f "$hosts" ]] || {
    echo "$me: '$prefix' is not up" >&2
    return 1
  }
  cat "$hosts"
}

main() {
  (($# >= 1)) || usage
  local cmd="$1"
  shift
  case "$cmd" in
    up)
      (($# == 2)) || usage
      check_prereqs up "$@"
      check_prefix "$1"
      up "$1" "$2"
      ;;
    down)
      (($# == 1)) || usage
      check_prereqs down "$@"
      check_prefix "$1"
      down "$1"
      ;;
    status)
      (($# == 1)) || usage
      check_prefix "$1"
      status "$1"
      ;;
    -h | --help) usage ;;
    *)
      echo "$me: unknown command '$cmd'" >&2
      usage
      ;;
  esac
}

main "$@"
