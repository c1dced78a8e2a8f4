#!/bin/bash
# Stops node B (test/node/up-b.sh) and removes its runtime state, as down.sh does for node A; node A and its
# registry are left alone. `down-b.sh --purge` removes node B's folder too.
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
source "$here/lib.sh"
[ -d "$NODE_B_DIR" ] || exit 0
# Node B runs node A's binaries: its processes are recognised by them.
prefix=$PREFIX
if [ -f "$NODE_B_DIR/env.json" ]; then
  prefix=$(node -e 'console.log(JSON.parse(require("node:fs").readFileSync(process.argv[1], "utf8")).prefix)' "$NODE_B_DIR/env.json")
fi
KYBERNATE_TESTNODE_DIR=$NODE_B_DIR KYBERNATE_TESTNODE_RUN=$NODE_B_RUN KYBERNATE_TESTNODE_PREFIX=$prefix \
  exec bash "$here/down.sh" "$@"
