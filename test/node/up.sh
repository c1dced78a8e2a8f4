#!/bin/bash
# Brings up the local test node: a private containerd 2.1+ (CRI + NRI) with runc 1.3+ and CRIU 4.2+, a
# docker-registry on loopback holding a locally built busybox image, and .testnode/env.json describing it.
# Idempotent: a second run only restarts what died. Run as root from anywhere: bash test/node/up.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ "$(id -u)" = 0 ] || die "the test node needs root (containerd, runc, CRIU); run: sudo npm run testnode:up"
command -v node >/dev/null || die "node is not on PATH; the test node's probes need Node 20"
[ -d "$ROOT/node_modules/@grpc/grpc-js" ] || die "node_modules is missing; run npm ci in $ROOT first"
mkdir -p "$TN" "$LOGDIR"
lock_node

# Replaces a file only when its content changes, so a second `up` leaves every file as it was.
put() { # path <content on stdin> -> exit 0 when the file changed
  local tmp
  tmp=$(mktemp "$1.XXXXXX")
  cat >"$tmp"
  if [ -f "$1" ] && cmp -s "$tmp" "$1"; then rm -f "$tmp"; return 1; fi
  chmod 0644 "$tmp"
  mv "$tmp" "$1"
}

# 1. Binaries: the prefix is rebuilt when missing, incomplete, or built for another path.
prefix_ok() {
  [ -f "$PREFIX/installed.json" ] && grep -qF "\"prefix\": \"$PREFIX\"" "$PREFIX/installed.json" || return 1
  local b
  for b in containerd containerd-shim-runc-v2 ctr runc criu checkpointctl docker-registry busybox kustomize; do
    [ -x "$PREFIX/bin/$b" ] || return 1
  done
  [ -f "$PREFIX/share/gocode/src/github.com/containerd/nri/pkg/api/api.proto" ] &&
    [ -f "$PREFIX/share/gocode/src/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto" ] &&
    [ -f "$PREFIX/share/gocode/src/github.com/containerd/containerd/api/services/tasks/v1/tasks.proto" ] &&
    [ -x "$PREFIX/libexec/cni/bridge" ]
}
if [ -n "${KYBERNATE_TESTNODE_PREFIX:-}" ]; then
  for b in containerd containerd-shim-runc-v2 ctr runc criu docker-registry busybox; do
    [ -x "$PREFIX/bin/$b" ] || die "KYBERNATE_TESTNODE_PREFIX=$PREFIX has no bin/$b; put containerd, its runc shim, ctr, runc, criu, docker-registry and busybox there"
  done
elif ! prefix_ok; then
  say "installing the private prefix $PREFIX (first run: about 20 s)"
  bash "$ROOT/test/node/install-prefix.sh"
  criu_report=$("$PREFIX/bin/criu" check 2>&1 || true)
  printf '%s\n' "$criu_report" >"$LOGDIR/criu-check.log"
  say "criu check: $(tail -n 1 <<<"$criu_report") (full report: $LOGDIR/criu-check.log)"
fi

# 2. Registry on loopback, its own config and storage.
reg_changed=no
put "$REG_CONFIG" <<EOF && reg_changed=yes
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $REG_STORE
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PORT
EOF
if [ -n "$(registry_pid)" ] && [ "$reg_changed" = yes ]; then
  say "registry config changed (port $PORT?), restarting docker-registry"
  stop_pid "$(registry_pid)" 5
fi
if [ -z "$(registry_pid)" ]; then
  say "starting docker-registry on 127.0.0.1:$PORT"
  start_registry
fi

# 3. containerd; a changed config (e.g. another port) needs a restart to take effect.
mkdir -p "$TN/cni/bin" "$TN/cni/net.d" "$TN/nri/plugins" "$TN/nri/conf.d" "$TN/opt" "$TN/tmp"
bash "$ROOT/test/node/pod-network.sh" up
config_changed=no
config_text=$(bash "$ROOT/test/node/containerd-config.sh")
printf '%s\n' "$config_text" | put "$CONFIG" && config_changed=yes
if [ -n "$(containerd_pid)" ] && [ "$config_changed" = yes ]; then
  say "containerd config changed, restarting containerd"
  stop_containerd
fi
if [ -z "$(containerd_pid)" ]; then
  say "starting containerd (socket $CD_SOCK, NRI $NRI_SOCK)"
  start_containerd
fi

# 4. The busybox and pause images: built locally, imported for CRI, pushed so that restores can pull by digest.
# The list is read whole first: with pipefail, grep -q closing the pipe early would fail the check at random.
images=$(ctr_ -n "$NS" images ls -q)
have_image() { grep -qxF "$1" <<<"$images"; }
in_registry() { # ref -> the registry serves its manifest
  local repo=${1#*/}
  [ "$(registry_http_status HEAD "/v2/${repo%:*}/manifests/${repo##*:}" application/vnd.oci.image.manifest.v1+json)" = 200 ]
}
if ! { have_image "$IMAGE_REF" && have_image "$PAUSE_REF" && in_registry "$IMAGE_REF" && in_registry "$PAUSE_REF"; }; then
  say "building and publishing $IMAGE_REF and $PAUSE_REF"
  bash "$ROOT/test/node/build-image.sh" "$PREFIX/bin/busybox" "$TN/busybox-oci.tar" "$IMAGE_REF" "$PAUSE_REF"
  ctr_ -n "$NS" images import --platform linux/amd64 "$TN/busybox-oci.tar" >/dev/null
  for ref in "$IMAGE_REF" "$PAUSE_REF"; do
    ctr_ -n "$NS" images push --plain-http "127.0.0.1:$PORT/${ref#*/}" "$ref" >/dev/null ||
      die "pushing $ref to the registry on 127.0.0.1:$PORT failed; see $LOGDIR/registry.log"
  done
fi
node "$ROOT/test/node/cri-probe.mjs" "$CD_SOCK" pull "$IMAGE_REF" >/dev/null ||
  die "CRI PullImage of $IMAGE_REF failed; see $LOGDIR/containerd.log and $LOGDIR/registry.log"

# 5. env.json for the tests (test/support/testnode.ts reads it).
node -e '
  const a = JSON.parse(process.argv[1]);
  const installed = JSON.parse(require("node:fs").readFileSync(`${a.prefix}/installed.json`, "utf8"));
  const bin = (n) => `${a.prefix}/bin/${n}`;
  const env = {
    criSocket: a.sock, nriSocket: a.nri, containerdSocket: a.sock, registry: `127.0.0.1:${a.port}`,
    image: a.image, pauseImage: a.pause, prefix: a.prefix, root: a.root, state: a.state, runcRoot: a.runcRoot,
    logDir: a.logDir, configPath: a.config, namespace: a.ns,
    containerdPid: Number(a.cdPid), registryPid: Number(a.regPid),
    bin: { containerd: bin("containerd"), ctr: bin("ctr"), runc: bin("runc"), criu: bin("criu"),
      checkpointctl: bin("checkpointctl"), shim: bin("containerd-shim-runc-v2") },
    protos: {
      nri: `${a.prefix}/share/gocode/src/github.com/containerd/nri/pkg/api/api.proto`,
      cri: `${a.prefix}/share/gocode/src/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto`,
      containerdTasks: `${a.prefix}/share/gocode/src/github.com/containerd/containerd/api/services/tasks/v1/tasks.proto`,
    },
    versions: installed.versions,
  };
  process.stdout.write(`${JSON.stringify(env, null, 2)}\n`);
' "$(node -e 'console.log(JSON.stringify(Object.fromEntries(process.argv.slice(1).map((kv) => kv.split(/=(.*)/s).slice(0, 2)))))' \
  sock="$CD_SOCK" nri="$NRI_SOCK" port="$PORT" image="$IMAGE_REF" pause="$PAUSE_REF" prefix="$PREFIX" root="$CD_ROOT" \
  state="$CD_STATE" runcRoot="$RUNC_ROOT" logDir="$LOGDIR" config="$CONFIG" ns="$NS" \
  cdPid="$(containerd_pid)" regPid="$(registry_pid)")" | put "$TN/env.json" || true

say "ready: CRI $CD_SOCK, NRI $NRI_SOCK, image $IMAGE_REF (containerd pid $(containerd_pid), registry pid $(registry_pid))"
