#!/usr/bin/env bash
# Builds everything and runs Pagewire's main job: the 2D heat stencil on a
# local cluster of 4 ranks (pagewire-run), checked against a sequential run,
# with each rank's fault statistics. On a fresh Debian 12 machine, as root:
#   bash scripts/run-main.sh [N [iterations [ranks]]]
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
bazel build //...

n="${1:-1024}"
iterations="${2:-100}"
ranks="${3:-4}"
exec bazel-bin/cluster/launcher/pagewire-run -n "$ranks" \
  bazel-bin/examples/heat "$n" "$iterations"
