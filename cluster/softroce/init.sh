#!/.pw/busybox sh
# init.sh - stage 1 of the soft-RoCE guest (/init in the initramfs that
# vm-run.sh builds). Runs under busybox before any of the host's userland is
# reachable: mounts the kernel filesystems, loads the virtio/9p modules
# shipped in the initramfs, mounts the host's /usr and /etc read-only over 9p
# (so every host-built binary finds the same glibc and libraries), the run's
# writable out share at /pw-out, then hands over to the real bash running
# guest-run.sh. Busybox is used only here, by full path, so its built-in
# ip/modprobe never shadow the real ones later.
bb=/.pw/busybox

die() {
  echo "pw-init: FATAL: $*" >/dev/console
  # Tell the host why, if the out share is up; then power off (a panic with
  # panic=-1 and QEMU's -no-reboot also ends the VM).
  [ -d /pw-out/.mounted ] && echo "rc=125 stage1: $*" >/pw-out/status
  $bb sync
  $bb poweroff -f
}

$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev

for m in $($bb cat /.pw/modules.order); do
  $bb insmod "/.pw/modules/$m.ko" || die "insmod $m failed"
done

# Read-only host trees are cached loosely (nothing changes them during the
# run); the out share is uncached so the host sees every line at once.
ro_opts=trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro
rw_opts=trans=virtio,version=9p2000.L,msize=512000,cache=none

# virtio devices are probed asynchronously: wait until 9pnet_virtio has
# bound every channel QEMU offers (at least the three fixed ones).
n=0
while [ "$($bb ls /sys/bus/virtio/drivers/9pnet_virtio 2>/dev/null | $bb grep -c '^virtio')" -lt 3 ]; do
  n=$((n + 1))
  [ $n -gt 100 ] && die "9p channels did not appear; virtio devices: $($bb ls /sys/bus/virtio/devices 2>&1)"
  $bb usleep 50000
done

$bb mkdir -p /pw-out /usr /etc
$bb mount -t 9p -o "$rw_opts" pwout /pw-out || die "cannot mount the out share (tag pwout)"
$bb mkdir -p /pw-out/.mounted
$bb mount -t 9p -o "$ro_opts" pwusr /usr || die "cannot mount the host's /usr (tag pwusr)"
$bb mount -t 9p -o "$ro_opts" pwetc /etc || die "cannot mount the host's /etc (tag pwetc)"

[ -x /usr/bin/bash ] || die "/usr/bin/bash missing in the host's /usr"
exec /usr/bin/bash /.pw/guest-run.sh
