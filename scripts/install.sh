#!/usr/bin/env bash
# Installs Pagewire into a prefix: lib/libpagewire.so, include/pagewire/*,
# lib/pkgconfig/pagewire.pc. Runs as the //:install target:
#
#   bazel run //:install -- /some/prefix     (default prefix: /usr/local)
#
# then:  cc prog.c $(pkg-config --cflags --libs pagewire)
# (with PKG_CONFIG_PATH=/some/prefix/lib/pkgconfig for a non-standard prefix).
# The .pc file puts an RPATH to ${libdir} on the program, so it runs without
# LD_LIBRARY_PATH; the library's own dependencies (abseil, gRPC, ...) are
# Debian system libraries found through the normal library path.
set -euo pipefail

VERSION="0.1.0"

usage() {
  echo "usage: bazel run //:install -- [PREFIX]   (default /usr/local)" >&2
}

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
esac
if [[ $# -gt 1 ]]; then echo "install.sh: too many arguments: $*" >&2; usage; exit 2; fi

prefix="${1:-/usr/local}"
# `bazel run` starts us in the runfiles tree: resolve a relative prefix
# against the directory the user ran bazel from.
if [[ "$prefix" != /* ]]; then
  prefix="${BUILD_WORKING_DIRECTORY:-$PWD}/$prefix"
fi

# Locate our data (the .so and headers) in the runfiles tree: under
# `bazel run` ($0.runfiles or the cwd), or inside a test that depends on
# //:install (RUNFILES_DIR / TEST_SRCDIR).
find_root() {
  local c
  for c in "${RUNFILES_DIR:-}" "${TEST_SRCDIR:-}" "$0.runfiles" "$PWD/.."; do
    if [[ -n "$c" && -f "$c/pagewire/libpagewire.so" ]]; then
      echo "$c/pagewire"
      return 0
    fi
  done
  return 1
}
if ! root="$(find_root)"; then
  echo "install.sh: cannot find libpagewire.so in the runfiles;" \
       "run me as 'bazel run //:install -- PREFIX'" >&2
  exit 1
fi

if ! mkdir -p "$prefix" 2>/dev/null || [[ ! -w "$prefix" ]]; then
  echo "install.sh: prefix '$prefix' is not writable;" \
       "run as root or choose another, e.g. bazel run //:install -- \$HOME/.local" >&2
  exit 1
fi

libdir="$prefix/lib"
incdir="$prefix/include/pagewire"
pcdir="$libdir/pkgconfig"
mkdir -p "$libdir" "$incdir" "$pcdir"

# cp -L, not `install`: under Bazel a runfiles entry named "install" (this
# script) can shadow /usr/bin/install on PATH.
rm -f "$libdir/libpagewire.so"
cp -L "$root/libpagewire.so" "$libdir/libpagewire.so"
chmod 0755 "$libdir/libpagewire.so"
shopt -s nullglob
headers=("$root"/include/pagewire/*.h "$root"/include/pagewire/*.hpp "$root"/include/pagewire/*.f90)
if [[ ${#headers[@]} -eq 0 ]]; then
  echo "install.sh: no headers found under $root/include/pagewire" >&2
  exit 1
fi
for h in "${headers[@]}"; do
  cp -L "$h" "$incdir/$(basename "$h")"
  chmod 0644 "$incdir/$(basename "$h")"
done

# The launcher, so programs built against the install can be started.
bindir="$prefix/bin"
mkdir -p "$bindir"
if [[ -f "$root/cluster/launcher/pagewire-run" ]]; then
  rm -f "$bindir/pagewire-run"
  cp -L "$root/cluster/launcher/pagewire-run" "$bindir/pagewire-run"
  chmod 0755 "$bindir/pagewire-run"
fi
for tool in pagewire-coordinator pagewire-ctl; do
  if [[ -f "$root/cluster/coordinator/$tool" ]]; then
    rm -f "$bindir/$tool"
    cp -L "$root/cluster/coordinator/$tool" "$bindir/$tool"
    chmod 0755 "$bindir/$tool"
  fi
done

cat > "$pcdir/pagewire.pc" <<PC
prefix=$prefix
exec_prefix=\${prefix}
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: pagewire
Description: Pagewire distributed shared-memory runtime
Version: $VERSION
Cflags: -I\${includedir}
Libs: -L\${libdir} -Wl,-rpath,\${libdir} -lpagewire
PC

echo "Installed Pagewire $VERSION into $prefix:"
echo "  $libdir/libpagewire.so"
for h in "${headers[@]}"; do echo "  $incdir/$(basename "$h")"; done
echo "  $pcdir/pagewire.pc"
if [[ "$prefix" != /usr && "$prefix" != /usr/local ]]; then
  echo "Use it with: PKG_CONFIG_PATH=$pcdir cc prog.c \$(pkg-config --cflags --libs pagewire)"
fi
