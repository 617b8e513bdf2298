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
  libibverbs-dev
  librdmacm-dev
  gfortran               # Fortran bindings / examples
  iproute2               # ip, for network-namespace tests
  procps                 # ps, pkill-free process inspection in tests
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
