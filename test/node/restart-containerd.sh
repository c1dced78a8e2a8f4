#!/bin/bash
# Stops the test node's containerd (by its recorded pid) and starts it again with the same config, leaving
# shims and containers running: what a containerd upgrade or crash looks like to an NRI plugin.
# Prints the new pid. Usage: bash test/node/restart-containerd.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ "$(id -u)" = 0 ] || die "restarting containerd needs root"
[ -f "$CONFIG" ] && [ -x "$PREFIX/bin/containerd" ] || die "no test node set up in $TN; run npm run testnode:up"
lock_node
old=$(containerd_pid)
[ -n "$old" ] || say "containerd was not running; starting it"
stop_containerd
start_containerd
new=$(containerd_pid)
say "containerd restarted (pid ${old:-none} -> $new)"
# env.json records the pid: keep it true.
if [ -f "$TN/env.json" ]; then
  node -e '
    const fs = require("node:fs");
    const env = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
    env.containerdPid = Number(process.argv[2]);
    fs.writeFileSync(`${process.argv[1]}.tmp`, `${JSON.stringify(env, null, 2)}\n`);
    fs.renameSync(`${process.argv[1]}.tmp`, process.argv[1]);
  ' "$TN/env.json" "$new"
fi
echo "$new"
