#!/usr/bin/env bash
# tls_test.sh - the control plane over TLS (PAGEWIRE_TLS_CERT/_KEY/_CA,
# runtime/control/tls.h) with certificates this test makes with openssl:
#   - a 2-rank heat job under pagewire-run with TLS: the coordinator says it
#     serves TLS and the job's answer is right;
#   - a standalone pagewire-coordinator with TLS: pagewire-ctl status works
#     with the job's certificates, and is refused without TLS, and with a
#     certificate another CA signed;
#   - only some of the variables set: pagewire-run refuses to start, naming
#     what is missing.
set -euo pipefail

fail() {
  echo "tls_test: FAIL: $*" >&2
  exit 1
}

runfiles="${RUNFILES_DIR:-${TEST_SRCDIR:?not run under bazel test}}"
ws="$runfiles/pagewire"
RUN="$ws/cluster/launcher/pagewire-run"
COORD="$ws/cluster/coordinator/pagewire-coordinator"
CTL="$ws/cluster/coordinator/pagewire-ctl"
HEAT="$ws/examples/heat"
tmp="${TEST_TMPDIR:?}/tls_test"
rm -rf "$tmp"
mkdir -p "$tmp"
cd "$tmp"

# make_ca NAME: NAME.key, NAME.pem (a self-signed CA).
make_ca() {
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$1" \
    -keyout "$1.key" -out "$1.pem" 2>/dev/null
}
# make_cert NAME CA: NAME.key, NAME.pem for 127.0.0.1 and localhost.
make_cert() {
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" \
    -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" \
    -CAcreateserial -days 2 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
}
command -v openssl >/dev/null || fail "openssl is not installed (scripts/install-deps.sh installs it)"
make_ca job-ca
make_cert node job-ca
make_ca other-ca
make_cert intruder other-ca

tls_env=(PAGEWIRE_TLS_CERT="$tmp/node.pem" PAGEWIRE_TLS_KEY="$tmp/node.key"
         PAGEWIRE_TLS_CA="$tmp/job-ca.pem")

# A job over TLS.
rc=0
env "${tls_env[@]}" timeout 120 "$RUN" -n 2 "$HEAT" 256 10 >out 2>&1 || rc=$?
((rc == 0)) || { cat out; fail "heat over TLS exited $rc"; }
grep -q "listening on .* (TLS, client certificates required)" out ||
  { cat out; fail "the coordinator did not say it serves TLS"; }
grep -qE '^\[0\] heat: .* matches the sequential computation' out ||
  { cat out; fail "heat over TLS gave no right answer"; }

# A standalone coordinator over TLS, and pagewire-ctl against it.
printf 'tls-test-secret\n' >secret
port=$((20000 + RANDOM % 20000))
env "${tls_env[@]}" "$COORD" --listen "127.0.0.1:$port" --nranks 1 \
  --cluster-id tls-job --secret-file secret >coord.log 2>&1 &
coord=$!
trap 'kill $coord 2>/dev/null || true' EXIT
ctl() {
  timeout 60 "$CTL" --coordinator "127.0.0.1:$port" --cluster-id tls-job \
    --secret-file secret "$@" status
}
ok=0
for _ in $(seq 100); do
  if (export "${tls_env[@]}"; ctl) >ctl.out 2>&1; then ok=1; break; fi
  kill -0 $coord 2>/dev/null || { cat coord.log; fail "pagewire-coordinator exited"; }
  sleep 0.1
done
((ok)) || { cat ctl.out coord.log; fail "pagewire-ctl status over TLS failed"; }
grep -q "^rank 0 " ctl.out || { cat ctl.out; fail "status lists no rank 0"; }

rc=0
ctl >ctl.out 2>&1 || rc=$?
((rc != 0)) || { cat ctl.out; fail "pagewire-ctl without TLS was served by a TLS coordinator"; }
rc=0
(export PAGEWIRE_TLS_CERT="$tmp/intruder.pem" PAGEWIRE_TLS_KEY="$tmp/intruder.key" \
  PAGEWIRE_TLS_CA="$tmp/job-ca.pem"; ctl) >ctl.out 2>&1 || rc=$?
((rc != 0)) || { cat ctl.out; fail "a certificate another CA signed was accepted"; }
grep -q "^rank 0 " ctl.out && fail "the intruder got the job's status"

# Some variables but not all.
rc=0
env PAGEWIRE_TLS_CERT="$tmp/node.pem" timeout 60 "$RUN" -n 2 "$HEAT" 256 1 >out 2>&1 || rc=$?
((rc != 0)) || fail "pagewire-run started with only PAGEWIRE_TLS_CERT set"
grep -q "missing: PAGEWIRE_TLS_KEY, PAGEWIRE_TLS_CA" out ||
  { cat out; fail "the refusal does not name the missing variables"; }
# A file that is not PEM.
rc=0
env PAGEWIRE_TLS_CERT="$tmp/secret" PAGEWIRE_TLS_KEY="$tmp/node.key" \
  PAGEWIRE_TLS_CA="$tmp/job-ca.pem" timeout 60 "$RUN" -n 2 "$HEAT" 256 1 >out 2>&1 || rc=$?
((rc != 0)) || fail "a job started with a certificate that is not PEM"
grep -q "PAGEWIRE_TLS_CERT=.*is not a PEM file" out ||
  { cat out; fail "the refusal does not name the bad file"; }
echo "tls_test: PASS"
