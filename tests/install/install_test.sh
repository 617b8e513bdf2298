#!/usr/bin/env bash
# See BUILD: install into $TEST_TMPDIR, compile hello_pagewire.c with the
# system cc via pkg-config, run it without LD_LIBRARY_PATH, check output.
set -euo pipefail

fail() { echo "install_test: FAIL: $*" >&2; exit 1; }

runfiles="${RUNFILES_DIR:-${TEST_SRCDIR:?not run under bazel test}}"
ws="$runfiles/pagewire"
prefix="${TEST_TMPDIR:?}/prefix"
rm -rf "$prefix"

echo "== install into $prefix"
"$ws/install" "$prefix" || fail "install script failed"

[[ -f "$prefix/lib/libpagewire.so" ]] || fail "lib/libpagewire.so missing"
[[ -f "$prefix/include/pagewire/pagewire.h" ]] || fail "include/pagewire/pagewire.h missing"
[[ -f "$prefix/lib/pkgconfig/pagewire.pc" ]] || fail "lib/pkgconfig/pagewire.pc missing"

soname="$(objdump -p "$prefix/lib/libpagewire.so" | awk '$1 == "SONAME" {print $2}')" ||
  fail "objdump failed"
[[ "$soname" == "libpagewire.so" ]] || fail "SONAME is '$soname', want libpagewire.so"

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
version="$(pkg-config --modversion pagewire)" || fail "pkg-config does not find pagewire"
[[ "$version" == "0.1.0" ]] || fail "pagewire.pc version '$version'"
flags="$(pkg-config --cflags --libs pagewire)"
echo "== pkg-config --cflags --libs pagewire: $flags"

echo "== compile"
exe="$TEST_TMPDIR/hello_pagewire"
# shellcheck disable=SC2086  # flags are meant to be word-split
cc -std=c11 -Wall -Werror -o "$exe" "$ws/tests/install/hello_pagewire.c" $flags ||
  fail "compiling/linking hello_pagewire.c against the installed library failed"

echo "== run"
unset LD_LIBRARY_PATH
out="$("$exe")" || fail "hello_pagewire exited with status $? (output: $out)"
echo "$out"
grep -qx "hello_pagewire: ok" <<<"$out" || fail "expected 'hello_pagewire: ok' in output"

# The program must have used the installed copy (via the .pc's RPATH).
ldd "$exe" | grep -q "$prefix/lib/libpagewire.so" ||
  fail "hello_pagewire does not resolve libpagewire.so from $prefix/lib: $(ldd "$exe")"

echo "install_test: PASS"
