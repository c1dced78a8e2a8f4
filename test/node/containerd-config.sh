#!/bin/bash
# Prints the test node's containerd config (version 3, containerd 2.x). Every path containerd would otherwise
# share with a system containerd (root, state, sockets, runc root, NRI, CNI, /opt) points into the node's own dirs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cat <<EOF
version = 3
root = '$CD_ROOT'
state = '$CD_STATE'
temp = '$TN/tmp'
# The btrfs/devmapper/zfs/erofs/blockfile snapshotters are of no use here and would only probe the host.
disabled_plugins = ['io.containerd.snapshotter.v1.btrfs', 'io.containerd.snapshotter.v1.devmapper',
  'io.containerd.snapshotter.v1.zfs', 'io.containerd.snapshotter.v1.erofs', 'io.containerd.snapshotter.v1.blockfile',
  'io.containerd.differ.v1.erofs', 'io.containerd.tracing.processor.v1.otlp']

[grpc]
  address = '$CD_SOCK'

[ttrpc]
  address = '$RUN/containerd.sock.ttrpc'

[debug]
  address = ''
  level = 'info'

[metrics]
  address = ''

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'

    # No internet on test machines: the pod sandbox runs a local busybox image that only sleeps.
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '$PAUSE_REF'

  [plugins.'io.containerd.cri.v1.runtime']
    # This VM's root lacks CAP_SYS_RESOURCE, so containers may not lower their OOM score below containerd's.
    restrict_oom_score_adj = true
    # Keep the host's AppArmor policy untouched (loading containerd's default profile would change it).
    disable_apparmor = true
    enable_cdi = false
    # Should a test ever ask for a pod network namespace, it is mounted here, not in the host's /run/netns.
    netns_mounts_under_state_dir = true

    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      Root = '$RUNC_ROOT'

    # Tests use host-network pods only; an empty private CNI dir keeps the host's CNI config out.
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['$TN/cni/bin']
      conf_dir = '$TN/cni/net.d'

  [plugins.'io.containerd.internal.v1.opt']
    path = '$TN/opt'

  [plugins.'io.containerd.nri.v1.nri']
    disable = false
    socket_path = '$NRI_SOCK'
    plugin_path = '$TN/nri/plugins'
    plugin_config_path = '$TN/nri/conf.d'

  [plugins.'io.containerd.image-verifier.v1.bindir']
    bin_dir = '$TN/image-verifier/bin'
EOF
