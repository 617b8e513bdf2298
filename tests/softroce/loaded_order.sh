#!/bin/sh
# loaded_order.sh TRANSPORT_TEST - completion order on the verbs error path
# with the machine loaded: two busy loops beside the transport suite's
# failure cases (a peer gone mid-read, PeerDied with work queued behind the
# send queue, remote access errors) and the send-queue overflow case, 20
# runs in a row. Every run must pass: their completions come in posting
# order whatever the scheduling.
set -u
test_bin="$1"
( while :; do :; done ) &
busy1=$!
( while :; do :; done ) &
busy2=$!
ok=0
for i in $(seq 20); do
  if "$test_bin" --gtest_filter='*TransportFailureTest*/Verbs:*ReadsFarPastTheSendQueue*/Verbs' \
      >"/tmp/loaded_order.$i" 2>&1; then
    ok=$((ok + 1))
  else
    echo "loaded_order: run $i FAILED:"
    grep -E "Failure|Which is|FAILED" "/tmp/loaded_order.$i" | head -12
  fi
done
kill "$busy1" "$busy2"
echo "loaded_order: $ok of 20 runs passed beside two busy loops"
[ "$ok" = 20 ]
