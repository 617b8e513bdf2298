#!/usr/bin/env bash
# Installs everything Pagewire needs to build and test on Debian 12, from
# Debian's own repository only (the Bazel build is fully offline).
# Idempotent: does nothing (not even `apt-get update`) when all packages are
# already installed. Must run as root (or with sudo available).
set -euo pipefail

PACKAGES=(
  bazel-bootstrap        # Bazel 4.2.3 (/usr/bin/bazel)
  bazel-rules-java       # @rules_java, used offline via WORKSPACE
  g++
  pkg-config
  libgrpc++-dev
  protobuf-compiler-grpc # grpc_cpp_plugin
  libprotobuf-dev
  protobuf-compiler      # protoc
  libabsl-dev
  libgtest-dev
  libgmock-dev
  libssl-dev             # libcrypto: HMAC-SHA256 handshakes
  openssl                # certificates in tests/control/tls_test.sh
  libibverbs-dev
  librdmacm-dev
  gfortran               # Fortran bindings / examples
  # The fuzz targets (tests/fuzz/, bazel test --config=fuzz): Debian's
  # clang 14 (//bazel/clang) and its libFuzzer, ASan and UBSan runtimes
  # (libclang_rt.fuzzer-x86_64.a and friends are in libclang-rt-14-dev).
  clang
  libclang-rt-14-dev
  iproute2               # ip, for network-namespace tests
  procps                 # ps, pkill-free process inspection in tests
  openmpi-bin libopenmpi-dev  # MPI_Get baseline of bench/remote_fault.sh
  # Soft-RoCE VM (cluster/softroce/vm-run.sh): real verbs on rdma_rxe inside
  # a QEMU/TCG guest that boots Debian's kernel and sees the host's /usr.
  qemu-system-x86        # qemu-system-x86_64 (TCG; never KVM)
  linux-image-amd64      # guest kernel (/boot/vmlinuz-*) with rdma_rxe.ko
  busybox-static         # the initramfs's first stage
  kmod                   # modprobe (real one, not busybox's)
  cpio xz-utils          # building the initramfs, unpacking the bzImage
  rdma-core              # RDMA userspace infrastructure
  ibverbs-providers      # librxe provider + /etc/libibverbs.d/rxe.driver
  ibverbs-utils          # ibv_devices, ibv_devinfo
  perftest               # ib_read_lat / ib_read_bw baseline
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then
    SUDO=(sudo)
  else
    echo "install-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q "${missing[@]}"
echo "install-deps: done"
