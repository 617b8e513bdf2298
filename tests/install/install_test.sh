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
# ldd's output is taken whole first: `ldd | grep -q` under pipefail fails
# whenever grep stops reading before ldd has written everything (SIGPIPE).
libs="$(ldd "$exe")" || fail "ldd $exe failed"
grep -qF "$prefix/lib/libpagewire.so" <<<"$libs" ||
  fail "hello_pagewire does not resolve libpagewire.so from $prefix/lib: $libs"

# The examples, as an HPC user builds them: plain cc / c++ / gfortran with
# pkg-config, started by the installed launcher on 2 ranks.
echo "== examples (make + pkg-config)"
[[ -x "$prefix/bin/pagewire-run" ]] || fail "bin/pagewire-run was not installed"
for tool in pagewire-coordinator pagewire-ctl; do
  [[ -x "$prefix/bin/$tool" ]] || fail "bin/$tool was not installed"
done
"$prefix/bin/pagewire-ctl" --help | grep -q "declare-dead" || fail "bin/pagewire-ctl --help does not run"
[[ -f "$prefix/include/pagewire/pagewire.f90" ]] || fail "the Fortran module source was not installed"
exdir="$TEST_TMPDIR/examples"
rm -rf "$exdir"
cp -rL "$ws/examples" "$exdir"
make -s -C "$exdir" OUT="$exdir" || fail "building the examples against the install failed"
for ex in "heat 256 20" "global_sum" "global_histogram"; do
  out="$("$prefix/bin/pagewire-run" -n 2 $exdir/$ex 2>&1)" ||
    fail "$ex on 2 ranks failed: $out"
  echo "$out" | grep -v "tcp:\|coordinator:"
done
grep -q "rank 1 of 2: 1048576 samples, histogram matches" <<<"$out" ||
  fail "global_histogram did not report a matching histogram"

echo "install_test: PASS"
