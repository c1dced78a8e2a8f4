#!/bin/bash
# The test node's pod network: a CNI bridge with Debian's containernetworking-plugins from the prefix, on
# addresses that exist only on this machine (no default route, no NAT, no host port mapping). containerd makes
# each pod's network namespace itself (under its state dir) and calls the plugins in $TN/cni/bin.
#
#   bash test/node/pod-network.sh up|down
#
# Called by up.sh and down.sh, under their lock (it takes none itself). The host is left as it was:
# - the bridge and its address are made here, not by the bridge plugin: with isGateway the plugin would turn
#   on net.ipv4.ip_forward for good; pods and the host reach each other on the bridge's own subnet;
# - host-local keeps its leases under $RUN (down.sh removes $RUN);
# - containerd's CNI library caches results in /var/lib/cni (not configurable in containerd 2.1): a marker
#   remembers whether this script found that directory, and down removes only what the node added there;
# - no portmap: its teardown runs iptables on the host, whose nft compatibility layer creates a nat table there.
#   No test maps host ports.
# Overrides: KYBERNATE_TESTNODE_BRIDGE (kybtn0), KYBERNATE_TESTNODE_POD_SUBNET (10.233.0.0/24, a /24).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BRIDGE=${KYBERNATE_TESTNODE_BRIDGE:-kybtn0}
SUBNET=${KYBERNATE_TESTNODE_POD_SUBNET:-10.233.0.0/24}
NET_NAME=kybernate-testnode
PLUGINS=${KYBERNATE_TESTNODE_CNI_PLUGINS:-$PREFIX/libexec/cni}
CONFLIST=$TN/cni/net.d/10-$NET_NAME.conflist
IPAM_DIR=$RUN/cni/networks
CNI_CACHE=/var/lib/cni
CNI_CACHE_MARK=$TN/created-var-lib-cni
DESCRIPTION=$TN/pod-network.json

[[ $SUBNET =~ ^([0-9]+\.[0-9]+\.[0-9]+)\.0/24$ ]] || die "KYBERNATE_TESTNODE_POD_SUBNET must be a /24 like 10.233.0.0/24, got $SUBNET"
GATEWAY=${BASH_REMATCH[1]}.1

up() {
  local p
  for p in bridge host-local loopback; do
    if [ ! -x "$PLUGINS/$p" ]; then
      say "no CNI plugin $PLUGINS/$p: pods get host networking only (install-prefix.sh installs the plugins)"
      rm -f "$CONFLIST" "$DESCRIPTION"
      return 0
    fi
  done
  if ip -o route show to "$SUBNET" | grep -qv " dev $BRIDGE "; then
    die "the host already routes $SUBNET elsewhere ($(ip -o route show to "$SUBNET" | head -1)); pick another with KYBERNATE_TESTNODE_POD_SUBNET"
  fi
  mkdir -p "$TN/cni/bin" "$TN/cni/net.d" "$IPAM_DIR"
  for p in bridge host-local loopback; do ln -sfn "$PLUGINS/$p" "$TN/cni/bin/$p"; done
  if [ ! -e "$CNI_CACHE" ] && [ ! -e "$CNI_CACHE_MARK" ]; then touch "$CNI_CACHE_MARK"; fi
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    say "creating the pod network: bridge $BRIDGE, $SUBNET"
    ip link add "$BRIDGE" type bridge
  fi
  ip addr replace "$GATEWAY/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  local tmp
  tmp=$(mktemp "$CONFLIST.XXXXXX")
  cat >"$tmp" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$NET_NAME",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": false,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "dataDir": "$IPAM_DIR",
        "ranges": [[{ "subnet": "$SUBNET", "gateway": "$GATEWAY" }]]
      }
    }
  ]
}
EOF
  chmod 0644 "$tmp"
  if cmp -s "$tmp" "$CONFLIST"; then rm -f "$tmp"; else mv "$tmp" "$CONFLIST"; fi
  printf '{"name": "%s", "bridge": "%s", "subnet": "%s", "gateway": "%s"}\n' \
    "$NET_NAME" "$BRIDGE" "$SUBNET" "$GATEWAY" >"$DESCRIPTION"
}

down() {
  # The pods' namespaces went with containerd's state (down.sh unmounts them): their veths are gone too.
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    say "removing the pod network bridge $BRIDGE"
    ip link del "$BRIDGE"
  fi
  rm -f "$CONFLIST" "$DESCRIPTION"
  rm -rf "$IPAM_DIR"
  if [ -d "$CNI_CACHE/results" ]; then
    find "$CNI_CACHE/results" -maxdepth 1 -name "$NET_NAME-*" -delete
  fi
  if [ -f "$CNI_CACHE_MARK" ]; then
    # Only what the node made: the results dir and the dir itself, when nothing else is in them.
    rmdir "$CNI_CACHE/results" 2>/dev/null || true
    rmdir "$CNI_CACHE" 2>/dev/null || say "$CNI_CACHE holds files the test node did not make; left in place"
    [ -e "$CNI_CACHE" ] || rm -f "$CNI_CACHE_MARK"
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) die "usage: pod-network.sh up|down" ;;
esac
