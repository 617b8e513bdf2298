#!/usr/bin/env bash
# vm-run.sh - runs host-built programs inside ONE QEMU guest with soft-RoCE
# (rdma_rxe), because the host kernel has no RDMA stack. The guest boots
# Debian's own kernel (the newest /boot/vmlinuz-* with rdma_rxe) under TCG,
# sees the host's /usr and /etc and the build trees read-only over 9p at the
# same paths (so binaries run unchanged on the same glibc and libraries),
# sets up three rxe devices and runs the given command lines in order.
#
#   vm-run.sh [options] -- CMD [ARGS...]
#   vm-run.sh [options] --job FILE [--job FILE...] [-- CMD [ARGS...]]
#
# Options:
#   --job FILE        command lines to run, one per line (bash syntax; blank
#                     lines and lines starting with '#' are skipped). A line
#                     "[NAME] CMD" names its step NAME (letters, digits,
#                     _ . -) in the log and the summary; others are named
#                     after their first word.
#   --timeout-s N     harness watchdog: kill QEMU after N s (default 1800).
#                     Only a bound on a wedged VM for CI, not a test timeout.
#   --share DIR       also share DIR read-only at the same path (repeatable).
#                     Shared by default: this repository, the Bazel output
#                     base (found through bazel-out or the working directory)
#                     and the working directory.
#   --env NAME=VALUE  set in the guest for every command (repeatable)
#   --cwd DIR         the commands' working directory (default: $PWD)
#   --out-dir DIR     keep the run's files here (job.log, results, status,
#                     console.log, dmesg.txt, artifacts/) instead of a
#                     temporary directory that is removed afterwards
#   --stop-on-failure stop after the first failing command (default: run all)
#   --shell           after the commands, open an interactive root shell in
#                     the guest on this terminal (exit it to power off)
#   --verbose         kernel console at loglevel 7, copied to stderr
#   --build-only      only build (or find cached) kernel and initramfs
#
# Output: every guest line goes to stdout as it happens; each command (a
# step) sits between "softroce-vm: [i/n] BEGIN step NAME $ CMD" and
# "softroce-vm: [i/n] END step NAME exit=N after S s". At the end, one line
# per step, "vm-run: step i/n NAME: PASS|FAIL (exit N)|NOT RUN ...", then a
# last line "vm-run: OK|FAIL: ..." that names the failing steps.
# Exit status: the first failing command's status (0 if all pass); 125 if
# the guest's setup failed or the VM stopped without reporting (the summary
# says during which step); 124 if the harness watchdog killed it. On failure
# the guest kernel log's tail is printed.
#
# Environment: PAGEWIRE_SKIP_VM=1 skips the run (prints SKIP, exits 0).
# PAGEWIRE_SOFTROCE_CACHE overrides the cache directory (default
# $XDG_CACHE_HOME/pagewire-softroce, else /var/cache/pagewire-softroce as
# root, ~/.cache/pagewire-softroce otherwise). PAGEWIRE_VM_KERNEL picks a
# kernel version (default: the newest installed one with rdma_rxe).
# See cluster/softroce/README.md.
set -euo pipefail

SELF="$(realpath "${BASH_SOURCE[0]}")"
HERE="$(dirname "$SELF")"
REPO="$(cd "$HERE/../.." && pwd -P)"

# Guest shape. TCG only: /dev/kvm exists on the CI hosts but its guests crash.
readonly VM_MEMORY=2G
readonly VM_CPUS=2
readonly DEFAULT_WATCHDOG_S=1800

say() { echo "vm-run: $*"; }
die() {
  echo "vm-run: error: $*" >&2
  exit 125
}
usage() { sed -n '2,/^set -euo/p' "$SELF" | sed -e '$d' -e 's/^# \{0,1\}//'; }

# --- arguments --------------------------------------------------------------
watchdog_s=$DEFAULT_WATCHDOG_S
jobs=()
extra_shares=()
envs=()
cwd="$(pwd -P)"
out_dir=""
stop_on_failure=0
shell=0
verbose=0
build_only=0
cmd=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --timeout-s) watchdog_s="${2:?--timeout-s needs a value}"; shift 2 ;;
    --job) jobs+=("${2:?--job needs a file}"); shift 2 ;;
    --share) extra_shares+=("${2:?--share needs a directory}"); shift 2 ;;
    --env) envs+=("${2:?--env needs NAME=VALUE}"); shift 2 ;;
    --cwd) cwd="${2:?--cwd needs a directory}"; shift 2 ;;
    --out-dir) out_dir="${2:?--out-dir needs a directory}"; shift 2 ;;
    --stop-on-failure) stop_on_failure=1; shift ;;
    --shell) shell=1; shift ;;
    --verbose) verbose=1; shift ;;
    --build-only) build_only=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; cmd=("$@"); break ;;
    *) echo "vm-run: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
[[ "$watchdog_s" =~ ^[1-9][0-9]*$ ]] || die "--timeout-s wants a positive number of seconds, got '$watchdog_s'"
for kv in "${envs[@]}"; do
  [[ "$kv" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env wants NAME=VALUE, got '$kv'"
done

if [[ "${PAGEWIRE_SKIP_VM:-}" == 1 ]]; then
  say "SKIP: PAGEWIRE_SKIP_VM=1, the soft-RoCE VM was not started"
  exit 0
fi

# The command lines, one per line.
cmd_lines=()
step_names=()
# default_name CMD: the step name of an unnamed line, its first word's
# basename.
default_name() {
  local w="${1#"${1%%[![:space:]]*}"}"
  w="${w%%[[:space:]]*}"
  w="${w##*/}"
  [[ -n "$w" ]] || w=step
  echo "$w"
}
for f in "${jobs[@]}"; do
  [[ -r "$f" ]] || die "cannot read job file $f"
  while IFS= read -r line || [[ -n "$line" ]]; do
    [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
    if [[ "$line" =~ ^\[([A-Za-z0-9_.-]+)\][[:space:]]+(.*)$ ]]; then
      step_names+=("${BASH_REMATCH[1]}")
      cmd_lines+=("${BASH_REMATCH[2]}")
    elif [[ "$line" =~ ^\[[^[:space:]]*\] ]]; then
      die "job file $f: bad step name in '$line': want [NAME] CMD, NAME of letters, digits, _ . -"
    else
      step_names+=("$(default_name "$line")")
      cmd_lines+=("$line")
    fi
  done <"$f"
done
if [[ ${#cmd[@]} -gt 0 ]]; then
  cmd_lines+=("$(printf '%q ' "${cmd[@]}")")
  step_names+=("$(basename "${cmd[0]}")")
fi
if [[ $build_only == 0 && $shell == 0 && ${#cmd_lines[@]} -eq 0 ]]; then
  die "nothing to run: give -- CMD [ARGS...], --job FILE or --shell"
fi

# --- tools ------------------------------------------------------------------
for tool in qemu-system-x86_64 busybox cpio modprobe xz flock timeout; do
  command -v "$tool" >/dev/null ||
    die "'$tool' is missing: run scripts/install-deps.sh (qemu-system-x86, busybox-static, kmod, cpio, xz-utils, ...) or set PAGEWIRE_SKIP_VM=1 to skip the VM"
done
BUSYBOX="$(command -v busybox)"
# The initramfs runs busybox without any libraries.
if ldd "$BUSYBOX" >/dev/null 2>&1; then
  die "$BUSYBOX is not a static busybox: install busybox-static"
fi

# --- the kernel -------------------------------------------------------------
pick_kernel() {
  local v
  if [[ -n "${PAGEWIRE_VM_KERNEL:-}" ]]; then
    echo "$PAGEWIRE_VM_KERNEL"
    return
  fi
  for v in $(ls /boot/vmlinuz-* 2>/dev/null | sed 's|^/boot/vmlinuz-||' | sort -rV); do
    if [[ -n "$(find "/lib/modules/$v/kernel/drivers/infiniband/sw/rxe" -name 'rdma_rxe.ko*' 2>/dev/null)" ]]; then
      echo "$v"
      return
    fi
  done
}
KVER="$(pick_kernel)"
[[ -n "$KVER" ]] || die "no /boot/vmlinuz-* with rdma_rxe in /lib/modules: install linux-image-amd64 (scripts/install-deps.sh)"
VMLINUZ="/boot/vmlinuz-$KVER"
[[ -r "$VMLINUZ" ]] || die "$VMLINUZ not readable"
[[ -d "/lib/modules/$KVER" ]] || die "/lib/modules/$KVER missing"

# Extracts the uncompressed ELF vmlinux from a bzImage, like the kernel's
# scripts/extract-vmlinux: find a compressed payload by its magic and keep
# the first one that decompresses to an ELF file. QEMU boots it directly
# through its PVH entry point, which skips the slow in-guest decompression.
extract_vmlinux() {
  local img="$1" out="$2" magic tool off
  for spec in 'xz:\xfd7zXZ\x00' 'gzip:\x1f\x8b\x08' 'zstd:\x28\xb5\x2f\xfd'; do
    tool="${spec%%:*}"
    magic="${spec#*:}"
    command -v "$tool" >/dev/null || continue
    for off in $(LC_ALL=C grep -obUaP "$magic" "$img" | cut -d: -f1); do
      case "$tool" in
        xz) tail -c +"$((off + 1))" "$img" | xz -dc --single-stream >"$out" 2>/dev/null ;;
        gzip) tail -c +"$((off + 1))" "$img" | gzip -dc >"$out" 2>/dev/null ;;
        zstd) tail -c +"$((off + 1))" "$img" | zstd -dcq >"$out" 2>/dev/null ;;
      esac
      if [[ "$(head -c 4 "$out" | od -An -tx1 | tr -d ' \n')" == 7f454c46 ]]; then
        return 0
      fi
    done
  done
  return 1
}

# Modules the initramfs loads itself (virtio PCI and 9p, to reach the host's
# /usr); everything else comes from the host's /lib/modules over 9p.
boot_modules() {
  local m
  for m in virtio_pci 9pnet_virtio 9p; do
    modprobe -S "$KVER" --show-depends "$m"
  done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }'
}

# --- the cache --------------------------------------------------------------
if [[ -n "${PAGEWIRE_SOFTROCE_CACHE:-}" ]]; then
  CACHE="$PAGEWIRE_SOFTROCE_CACHE"
elif [[ -n "${XDG_CACHE_HOME:-}" ]]; then
  CACHE="$XDG_CACHE_HOME/pagewire-softroce"
elif [[ "$(id -u)" == 0 ]]; then
  CACHE=/var/cache/pagewire-softroce
else
  CACHE="${HOME:-/tmp}/.cache/pagewire-softroce"
fi
mkdir -p "$CACHE" || die "cannot create cache directory $CACHE"

key="$({
  echo "$KVER"
  sha256sum "$VMLINUZ" "$BUSYBOX" "$SELF" "$HERE/init.sh" "$HERE/guest-run.sh" | cut -d' ' -f1
  boot_modules
} | sha256sum | cut -c1-16)"
ENTRY="$CACHE/$KVER-$key"
VMLINUX="$ENTRY/vmlinux"
INITRD="$ENTRY/initramfs.cpio"

build_entry() {
  local tmp staging m name
  tmp="$(mktemp -d "$CACHE/.build.XXXXXX")"
  say "building kernel + initramfs for $KVER into $ENTRY"
  extract_vmlinux "$VMLINUZ" "$tmp/vmlinux" ||
    { rm -rf "$tmp"; die "cannot extract an ELF vmlinux from $VMLINUZ"; }
  staging="$tmp/root"
  mkdir -p "$staging"/{.pw/modules,proc,sys,dev,tmp,run,var,root,usr,etc,pw-out}
  ln -s usr/bin "$staging/bin"
  ln -s usr/sbin "$staging/sbin"
  ln -s usr/lib "$staging/lib"
  ln -s usr/lib64 "$staging/lib64"
  cp "$BUSYBOX" "$staging/.pw/busybox"
  cp "$HERE/init.sh" "$staging/init"
  cp "$HERE/guest-run.sh" "$staging/.pw/guest-run.sh"
  chmod 0755 "$staging/init" "$staging/.pw/guest-run.sh" "$staging/.pw/busybox"
  : >"$staging/.pw/modules.order"
  for m in $(boot_modules); do
    name="$(basename "$m")"
    name="${name%%.ko*}"
    case "$m" in
      *.ko) cp "$m" "$staging/.pw/modules/$name.ko" ;;
      *.ko.xz) xz -dc "$m" >"$staging/.pw/modules/$name.ko" ;;
      *.ko.gz) gzip -dc "$m" >"$staging/.pw/modules/$name.ko" ;;
      *.ko.zst) zstd -dcq "$m" >"$staging/.pw/modules/$name.ko" ;;
      *) rm -rf "$tmp"; die "unknown module format: $m" ;;
    esac
    echo "$name" >>"$staging/.pw/modules.order"
  done
  (cd "$staging" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$tmp/initramfs.cpio"
  rm -rf "$staging"
  # Older entries for this cache are stale (other key): drop them.
  find "$CACHE" -mindepth 1 -maxdepth 1 -type d ! -name '.*' ! -name "$(basename "$ENTRY")" \
    -exec rm -rf {} + 2>/dev/null || true
  mv "$tmp" "$ENTRY"
}

t_start=$(date +%s%N)
elapsed() { local t; t=$(date +%s%N); echo "$(((t - t_start) / 1000000000)).$(((t - t_start) / 100000000 % 10))"; }
(
  flock 9
  if [[ ! -f "$INITRD" || ! -f "$VMLINUX" ]]; then
    build_entry
  fi
) 9>"$CACHE/.lock"
[[ -f "$INITRD" && -f "$VMLINUX" ]] || die "cache entry $ENTRY is incomplete"
if [[ $build_only == 1 ]]; then
  say "kernel $VMLINUX"
  say "initramfs $INITRD"
  exit 0
fi

# --- shares -------------------------------------------------------------------
# Everything the commands touch must be visible at its host path. The guest
# always sees /usr and /etc; add this repository, the Bazel output base
# (bazel-bin, runfiles and execroot live there) and the working directory.
output_base_of() {
  local p
  p="$(realpath -q "$1" 2>/dev/null)" || return 0
  [[ "$p" == */execroot/* ]] && echo "${p%%/execroot/*}"
  return 0
}
[[ -d "$cwd" ]] || die "--cwd $cwd is not a directory"
cwd="$(cd "$cwd" && pwd -P)"
candidates=("$REPO" "$cwd")
probes=("$REPO/bazel-out" "$cwd" "$cwd/bazel-out")
# Paths named on the command line (-- CMD ARGS): their output base, or else
# their own directory.
for w in "${cmd[@]}"; do
  [[ -e "$w" && "$w" == */* ]] || continue
  probes+=("$w")
  rp="$(realpath -q "$w" 2>/dev/null)" || continue
  [[ "$rp" == */execroot/* ]] || candidates+=("$(dirname "$rp")")
done
for p in "${probes[@]}"; do
  ob="$(output_base_of "$p")"
  [[ -n "$ob" ]] && candidates+=("$ob")
done
for s in "${extra_shares[@]}"; do
  [[ -d "$s" ]] || die "--share $s is not a directory"
  candidates+=("$(cd "$s" && pwd -P)")
done
shares=()
covered() { # is $1 at or under an existing share, or under /usr or /etc?
  local s
  for s in /usr /etc "${shares[@]}"; do
    [[ "$1" == "$s" || "$1" == "$s"/* ]] && return 0
  done
  return 1
}
# Shortest first, so a parent swallows its children.
while IFS= read -r p; do
  [[ -z "$p" ]] && continue
  case "$p" in
    / | /proc | /proc/* | /sys | /sys/* | /dev | /dev/* | /pw-out | /pw-out/*)
      die "cannot share $p into the guest" ;;
  esac
  covered "$p" || shares+=("$p")
done < <(printf '%s\n' "${candidates[@]}" | awk '{ print length($0) "\t" $0 }' | sort -n | cut -f2-)

# --- the run's files ----------------------------------------------------------
keep_out=1
if [[ -z "$out_dir" ]]; then
  out_dir="$(mktemp -d "${TMPDIR:-/tmp}/pagewire-vm.XXXXXX")"
  keep_out=0
fi
mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd -P)"
rm -rf "$out_dir"/{job.log,job.cmds,job.names,vm.conf,results,status,status.tmp,console.log,dmesg.txt,artifacts,.mounted}
: >"$out_dir/job.log"
printf '%s\n' "${cmd_lines[@]}" >"$out_dir/job.cmds"
printf '%s\n' "${step_names[@]}" >"$out_dir/job.names"
if [[ ${#cmd_lines[@]} -eq 0 ]]; then
  : >"$out_dir/job.cmds"
  : >"$out_dir/job.names"
fi
{
  printf 'PW_SHARES=('
  for i in "${!shares[@]}"; do printf '%q ' "pw$i ${shares[i]}"; done
  printf ')\nPW_ENV=('
  for kv in "${envs[@]}"; do printf '%q ' "$kv"; done
  printf ')\n'
  printf 'PW_CWD=%q\n' "$cwd"
  printf 'PW_STOP_ON_FAILURE=%d\nPW_SHELL=%d\n' "$stop_on_failure" "$shell"
} >"$out_dir/vm.conf"

qemu_pid=""
tail_pid=""
console_tail_pid=""
cleanup() {
  [[ -n "$qemu_pid" ]] && kill "$qemu_pid" 2>/dev/null
  [[ -n "$tail_pid" ]] && kill "$tail_pid" 2>/dev/null
  [[ -n "$console_tail_pid" ]] && kill "$console_tail_pid" 2>/dev/null
  [[ $keep_out == 0 ]] && rm -rf "$out_dir"
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- boot ---------------------------------------------------------------------
loglevel=5
[[ $verbose == 1 ]] && loglevel=7
virtfs() { # path tag [readonly]
  local opt="local,path=$1,mount_tag=$2,security_model=none,multidevs=remap"
  [[ "${3:-}" == ro ]] && opt+=",readonly=on"
  echo "$opt"
}
qemu=(
  qemu-system-x86_64 -nodefaults -no-user-config -display none -no-reboot
  -machine pc -accel tcg,thread=multi -cpu max -m "$VM_MEMORY" -smp "$VM_CPUS"
  -kernel "$VMLINUX" -initrd "$INITRD"
  -append "console=ttyS0 loglevel=$loglevel panic=-1 mitigations=off random.trust_cpu=on tsc=reliable"
  -virtfs "$(virtfs "$out_dir" pwout)"
  -virtfs "$(virtfs /usr pwusr ro)"
  -virtfs "$(virtfs /etc pwetc ro)"
)
for i in "${!shares[@]}"; do
  qemu+=(-virtfs "$(virtfs "${shares[i]}" "pw$i" ro)")
done

say "booting $KVER (TCG, ${VM_CPUS} CPUs, $VM_MEMORY), ${#cmd_lines[@]} command(s), harness watchdog ${watchdog_s} s"
say "shared read-only: /usr /etc ${shares[*]}; out: $out_dir"

tail -n +1 -s 0.2 -f "$out_dir/job.log" &
tail_pid=$!
set +e
if [[ $shell == 1 ]]; then
  # The console is this terminal; QEMU's monitor is on Ctrl-A c.
  timeout --foreground -k 10 "$watchdog_s" "${qemu[@]}" -serial mon:stdio
  qemu_status=$?
else
  : >"$out_dir/console.log"
  if [[ $verbose == 1 ]]; then
    tail -n +1 -s 0.2 -f "$out_dir/console.log" >&2 &
    console_tail_pid=$!
  fi
  timeout -k 10 "$watchdog_s" "${qemu[@]}" -serial "file:$out_dir/console.log" </dev/null &
  qemu_pid=$!
  wait "$qemu_pid"
  qemu_status=$?
  qemu_pid=""
fi
set -e
# Let tail print the last lines, then stop it.
sleep 0.5
kill "$tail_pid" 2>/dev/null || true
wait "$tail_pid" 2>/dev/null || true
tail_pid=""
if [[ -n "$console_tail_pid" ]]; then
  kill "$console_tail_pid" 2>/dev/null || true
  wait "$console_tail_pid" 2>/dev/null || true
  console_tail_pid=""
fi

show_kernel_log() {
  if [[ -s "$out_dir/dmesg.txt" ]]; then
    say "guest kernel log (last 40 lines of dmesg):"
    tail -n 40 "$out_dir/dmesg.txt" | sed 's/^/vm-run: | /'
  elif [[ -s "$out_dir/console.log" ]]; then
    say "guest console (last 40 lines):"
    tail -n 40 "$out_dir/console.log" | sed 's/^/vm-run: | /'
  else
    say "the guest wrote nothing to its console"
  fi
}

# One line per step from the guest's results ("i status seconds name");
# a step without a result never finished. Sets failed_steps and
# running_step (the step the VM was in when it stopped, if any).
failed_steps=()
running_step=""
step_summary() {
  local n=${#cmd_lines[@]} i rc secs name
  declare -A st=() sec=()
  if [[ -f "$out_dir/results" ]]; then
    while read -r i rc secs name; do
      [[ "$i" =~ ^[0-9]+$ ]] || continue
      st[$i]=$rc
      sec[$i]=$secs
    done <"$out_dir/results"
  fi
  for ((i = 1; i <= n; i++)); do
    name="${step_names[i - 1]}"
    if [[ -n "${st[$i]:-}" ]]; then
      if [[ "${st[$i]}" == 0 ]]; then
        say "step $i/$n $name: PASS in ${sec[$i]} s"
      else
        say "step $i/$n $name: FAIL (exit ${st[$i]}) in ${sec[$i]} s"
        failed_steps+=("$name ($i/$n, exit ${st[$i]})")
      fi
    elif [[ -z "$running_step" ]] &&
      grep -q "^softroce-vm: \[$i/$n\] BEGIN " "$out_dir/job.log" 2>/dev/null; then
      running_step="$name ($i/$n)"
      say "step $i/$n $name: DID NOT FINISH (the VM stopped during it)"
    else
      say "step $i/$n $name: NOT RUN"
    fi
  done
}

if [[ ! -s "$out_dir/status" ]]; then
  step_summary
  during=""
  [[ -n "$running_step" ]] && during=" during step $running_step"
  if [[ $qemu_status == 124 || $qemu_status == 137 ]]; then
    say "FAIL: harness watchdog killed the VM after ${watchdog_s} s (--timeout-s)$during; it never reported a status"
    show_kernel_log
    exit 124
  fi
  say "FAIL: the VM stopped (qemu exit status $qemu_status) after $(elapsed) s$during, without reporting a status (guest crash, kernel panic or QEMU killed; see the log below)"
  show_kernel_log
  exit 125
fi

status_line="$(head -1 "$out_dir/status")"
rc="${status_line#rc=}"
rc="${rc%% *}"
[[ "$rc" =~ ^[0-9]+$ ]] || { say "FAIL: unreadable status '$status_line'"; show_kernel_log; exit 125; }
failed=0
total=0
if [[ -f "$out_dir/results" ]]; then
  failed="$(awk '$2 != 0 { n++ } END { print n + 0 }' "$out_dir/results")"
  total="$(awk 'END { print NR }' "$out_dir/results")"
fi
step_summary
if [[ "$rc" != 0 ]]; then
  if [[ "$status_line" == *setup:* || "$status_line" == *stage1:* ]]; then
    reason="${status_line#rc=* }"
    say "FAIL: guest setup failed: ${reason#*: }"
  else
    joined="$(printf '%s; ' "${failed_steps[@]}")"
    say "FAIL: $failed of $total step(s) failed: ${joined%; }; first failing status $rc"
  fi
  show_kernel_log
  [[ $keep_out == 1 ]] && say "run files kept in $out_dir"
  say "total $(elapsed) s"
  exit "$rc"
fi
say "OK: $total step(s) passed in $(elapsed) s (cache $ENTRY)"
exit 0
