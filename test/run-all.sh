#!/usr/bin/env bash
# The whole suite: unit tests first (any machine), then the test node and the integration tests (root).
set -euo pipefail
cd "$(dirname "$0")/.."
unit=()
for d in dist/test/*/; do
  case "$d" in dist/test/integration/|dist/test/bench/|dist/test/node/) ;; *) unit+=("$d") ;; esac
done
bash test/node/up.sh
# One file at a time: the integration tests share one containerd and the machine has two cores.
exec node --test --test-concurrency=1 "${unit[@]}" dist/test/integration/
