#!/usr/bin/env bash
# The whole suite: unit tests first (any machine), then the test node and the integration tests (root).
# Only *.test.js files are tests: node --test would also run every other .js file under a "test" folder.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t unit < <(find dist/test -name '*.test.js' -not -path 'dist/test/integration/*' -not -path 'dist/test/node/*' | sort)
mapfile -t integration < <(find dist/test/integration dist/test/node -name '*.test.js' | sort)
bash test/gpu/double/build.sh >/dev/null
bash test/node/up.sh
# Node B: a second containerd beside node A, for the migration tests (a checkpoint image pushed on A, restored on B).
bash test/node/up-b.sh
# One file at a time: the integration tests share one containerd (two kybernate plugins on one node would
# both adjust the same containers) and the machine has two cores.
exec node --test --test-concurrency=1 "${unit[@]}" "${integration[@]}"
