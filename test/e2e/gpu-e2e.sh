#!/usr/bin/env bash
# kybernate end to end on a GPU node (issue 5): brings up the test node (containerd with CRI + NRI, runc, CRIU,
# a loopback registry), then runs dist/test/e2e/gpu-e2e.js, which drives a GPU pod through CRI checkpoint and
# restore with kybernate and prints the figures. Needs root, node, the compiled dist/ and production node_modules.
#
#   bash test/e2e/gpu-e2e.sh [--bin-dir DIR --extra-bin-dir DIR] -- [gpu-e2e options]
#
# --bin-dir DIR: take containerd, containerd-shim-runc-v2, ctr, runc and criu from DIR instead of installing them
#   from Debian (a GPU host without a package registry); --extra-bin-dir DIR holds docker-registry and busybox.
# gpu-e2e options: --workload cuda|torch|double  --gib 2,4,8,16  --floor 2,16  --gpu-backend driver|binary
#   --cuda-checkpoint PATH  --libcuda PATH  --workload-bin PATH  --driver-root DIR  --devices LIST
#   --python PATH  --python-mounts LIST  --torch-steps N  --out FILE
#   --via-image (restore from a checkpoint image pushed to the node's registry, as the kubelet would)
set -euo pipefail
cd "$(dirname "$0")/../.."
bin_dir="" extra_dir=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --extra-bin-dir) extra_dir=$2; shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
[[ $(id -u) -eq 0 ]] || { echo "gpu-e2e: run as root (containerd, CRIU and the driver's checkpoint API need it)" >&2; exit 2; }
[[ -f dist/test/e2e/gpu-e2e.js ]] || { echo "gpu-e2e: dist/ is missing: run npm run build (and bring dist/ along)" >&2; exit 2; }
if [[ -n $bin_dir ]]; then
  [[ -n $extra_dir ]] || { echo "gpu-e2e: --bin-dir needs --extra-bin-dir with docker-registry and busybox" >&2; exit 2; }
  prefix=${KYBERNATE_E2E_PREFIX:-/tmp/kybernate-e2e-prefix}
  mkdir -p "$prefix/bin"
  # Copied only when changed: replacing a running binary would make up.sh think its daemon had died.
  put_bin() { cmp -s "$1" "$2" 2>/dev/null || { cp -f "$1" "$2" && chmod +x "$2"; }; }
  for b in containerd containerd-shim-runc-v2 ctr runc criu; do put_bin "$bin_dir/$b" "$prefix/bin/$b"; done
  for b in docker-registry busybox; do put_bin "$extra_dir/$b" "$prefix/bin/$b"; done
  # The pod network's CNI plugins (make-gpu-bundle.sh puts them in extra/cni), where pod-network.sh looks.
  if [[ -d $extra_dir/cni ]]; then
    mkdir -p "$prefix/libexec/cni"
    for p in "$extra_dir"/cni/*; do put_bin "$p" "$prefix/libexec/cni/$(basename "$p")"; done
  fi
  put_bin "$prefix/bin/criu" "$prefix/bin/checkpointctl" # only named in env.json; the e2e never runs it
  v() { "$prefix/bin/$1" --version 2>&1 | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -1; }
  printf '{"prefix": "%s", "versions": {"containerd": "%s", "runc": "%s", "criu": "%s", "checkpointctl": "none", "registry": "given"}}\n' \
    "$prefix" "$(v containerd)" "$(v runc)" "$(v criu)" >"$prefix/installed.json"
  export KYBERNATE_TESTNODE_PREFIX=$prefix
  export PATH="$bin_dir:$PATH"
fi
bash test/node/up.sh
# test/e2e/pod-e2e.sh runs its own driver on the same node.
exec node "${KYBERNATE_E2E_DRIVER:-dist/test/e2e/gpu-e2e.js}" "$@"
