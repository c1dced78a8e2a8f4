#!/bin/bash
# Stops the test node and removes its runtime state: containers, shims, containerd, registry, mounts.
# Keeps as a cache (so the next `up` takes seconds): the prefix (.testnode/prefix), the apt lists, the
# registry's storage and the built image tar. `down.sh --purge` removes all of .testnode as well.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

purge=no
case "${1:-}" in
  "") ;;
  --purge) purge=yes ;;
  *) die "unknown argument '$1'; usage: down.sh [--purge]" ;;
esac
[ "$(id -u)" = 0 ] || die "stopping the test node needs root; run: sudo npm run testnode:down"
# Node B shares this node's registry and prefix: it goes first.
if [ "$TN" != "$NODE_B_DIR" ] && [ -d "$NODE_B_DIR" ]; then
  bash "$(dirname "${BASH_SOURCE[0]}")/down-b.sh" ${1:+"$1"}
fi
lock_node

# 1. While containerd still runs, let it stop and delete its containers through their shims.
if [ -n "$(containerd_pid)" ] && [ -S "$CD_SOCK" ]; then
  for ns in $(ctr_ namespaces ls -q 2>/dev/null || true); do
    tasks=$(ctr_ -n "$ns" tasks ls -q 2>/dev/null || true)
    for t in $tasks; do ctr_ -n "$ns" tasks kill -a -s SIGKILL "$t" >/dev/null 2>&1 || true; done
    for t in $tasks; do ctr_ -n "$ns" tasks rm -f "$t" >/dev/null 2>&1 || true; done
    for c in $(ctr_ -n "$ns" containers ls -q 2>/dev/null || true); do
      ctr_ -n "$ns" containers rm "$c" >/dev/null 2>&1 || true
    done
  done
fi
if [ -n "$(containerd_pid)" ]; then
  say "stopping containerd (pid $(containerd_pid))"
fi
stop_containerd

# 2. Whatever outlived containerd: containers in the node's runc root, then the shims serving its socket.
if [ -d "$RUNC_ROOT" ] && [ -x "$PREFIX/bin/runc" ]; then
  for nsdir in "$RUNC_ROOT"/*/; do
    [ -d "$nsdir" ] || continue
    for cdir in "$nsdir"*/; do
      [ -f "$cdir/state.json" ] || continue
      id=$(basename "$cdir")
      say "removing leftover container $id"
      "$PREFIX/bin/runc" --root "${nsdir%/}" delete -f "$id" >/dev/null 2>&1 || true
    done
  done
fi
for p in /proc/[0-9]*; do
  [ "$(readlink "$p/exe" 2>/dev/null)" = "$PREFIX/bin/containerd-shim-runc-v2" ] || continue
  args=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null || true)
  [[ "$args " == *" -address $CD_SOCK "* ]] || continue
  say "stopping leftover shim ${p#/proc/}"
  stop_pid "${p#/proc/}" 5
done

# 3. Mounts under the node's own dirs, deepest first (container rootfs overlays, sandbox shm).
awk '{print $5}' /proc/self/mountinfo | grep -E "^($TN|$RUN)(/|$)" | sort -r | while read -r m; do
  umount "$m" 2>/dev/null || umount -l "$m" || say "could not unmount $m"
done || true

# 4. The registry.
if [ -n "$(registry_pid)" ]; then
  say "stopping docker-registry (pid $(registry_pid))"
  stop_pid "$(registry_pid)" 5
fi
rm -f "$TN/registry.pid"

# 5. Runtime state; containerd's root goes too, so the next `up` starts with no stale pods or containers.
bash "$ROOT/test/node/pod-network.sh" down
rm -rf "$RUN" "$CD_ROOT" "$TN/tmp" "$TN/env.json"
if [ -f "$RUN_CONTAINERD_MARK" ]; then
  rmdir /run/containerd/s /run/containerd 2>/dev/null || true
  rm -f "$RUN_CONTAINERD_MARK"
fi
if [ -f "$CGROUP_MARK" ]; then
  while read -r cg; do
    [ -d "$cg" ] && { find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || say "cgroup $cg is still in use, left in place"; }
  done <"$CGROUP_MARK"
  rm -f "$CGROUP_MARK"
fi
if [ "$purge" = yes ]; then
  rm -rf "$TN"
  say "purged $TN"
else
  say "stopped; kept the cache in $TN (prefix, registry storage); 'down.sh --purge' removes it"
fi
