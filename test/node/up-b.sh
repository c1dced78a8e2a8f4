#!/bin/bash
# Brings up node B: a second containerd (CRI + NRI) on this machine beside the test node (node A), with its own
# folder (.testnode-b), root, state, sockets, NRI socket and runc root, sharing node A's prefix and registry, so a
# checkpoint image pushed from one node can be restored on the other. Needs node A up (test/node/up.sh).
# Idempotent. Stopped by test/node/down-b.sh, and by test/node/down.sh (node A's) before node A.
#
# Two containerds on one host meet only in /run/containerd/s, where containerd hard-codes its shims' sockets: each
# socket's name hashes the containerd address, namespace and container id, so the nodes' shims never share one.
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
source "$here/lib.sh"
A_TN=$TN
[ "$(id -u)" = 0 ] || die "node B needs root (containerd, runc, CRIU); run: sudo bash test/node/up-b.sh"
[ -f "$A_TN/env.json" ] || die "node B shares node A's prefix and registry: bring node A up first (npm run testnode:up)"
A_PREFIX=$(node -e 'console.log(JSON.parse(require("node:fs").readFileSync(process.argv[1], "utf8")).prefix)' "$A_TN/env.json")
[ -n "$(registry_http_status GET /v2/)" ] || die "node A's registry on 127.0.0.1:$PORT does not answer: run npm run testnode:up"

export KYBERNATE_TESTNODE_DIR=$NODE_B_DIR KYBERNATE_TESTNODE_RUN=$NODE_B_RUN KYBERNATE_TESTNODE_PREFIX=$A_PREFIX
source "$here/lib.sh"
mkdir -p "$TN" "$LOGDIR"
lock_node

mkdir -p "$TN/cni/bin" "$TN/cni/net.d" "$TN/nri/plugins" "$TN/nri/conf.d" "$TN/opt" "$TN/tmp"
config_text=$(bash "$here/containerd-config.sh")
if [ ! -f "$CONFIG" ] || [ "$(cat "$CONFIG")" != "$config_text" ]; then
  printf '%s\n' "$config_text" >"$CONFIG.tmp" && mv "$CONFIG.tmp" "$CONFIG"
  if [ -n "$(containerd_pid)" ]; then
    say "node B: containerd config changed, restarting containerd"
    stop_containerd
  fi
fi
if [ -z "$(containerd_pid)" ]; then
  say "node B: starting containerd (socket $CD_SOCK, NRI $NRI_SOCK)"
  start_containerd
fi
node "$ROOT/test/node/cri-probe.mjs" "$CD_SOCK" pull "$IMAGE_REF" >/dev/null ||
  die "node B: CRI PullImage of $IMAGE_REF from node A's registry failed; see $LOGDIR/containerd.log"

# env.json: node A's, with node B's containerd (the registry, images, prefix and binaries are node A's).
node -e '
  const fs = require("node:fs");
  const [aEnv, out, sock, nri, root, state, runcRoot, logDir, config, pid] = process.argv.slice(1);
  const env = JSON.parse(fs.readFileSync(aEnv, "utf8"));
  Object.assign(env, { node: "b", criSocket: sock, nriSocket: nri, containerdSocket: sock, root, state, runcRoot,
    logDir, configPath: config, containerdPid: Number(pid) });
  fs.writeFileSync(`${out}.tmp`, `${JSON.stringify(env, null, 2)}\n`);
  fs.renameSync(`${out}.tmp`, out);
' "$A_TN/env.json" "$TN/env.json" "$CD_SOCK" "$NRI_SOCK" "$CD_ROOT" "$CD_STATE" "$RUNC_ROOT" "$LOGDIR" "$CONFIG" "$(containerd_pid)"
say "node B ready: CRI $CD_SOCK, NRI $NRI_SOCK (containerd pid $(containerd_pid)), registry 127.0.0.1:$PORT of node A"
