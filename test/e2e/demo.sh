#!/usr/bin/env bash
# kybernate's main job on the embedded default: the local test node (containerd 2.1 + CRI + NRI, runc, CRIU 4.2,
# a loopback registry), kybernate running as its NRI plugin and CRIU hook daemon, and a GPU container (the GPU
# test double: no GPU needed) checkpointed with CRI CheckpointContainer and restored with CRI CreateContainer +
# StartContainer in a new pod, its "VRAM" verified. On a GPU node the same script is test/e2e/gpu-e2e.sh.
# Usage (root, after npm ci): npm run demo    Options after --, e.g. npm run demo -- --gib 0.5,1
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ $(id -u) -eq 0 ]] || { echo "demo: run as root (containerd, runc and CRIU need it)" >&2; exit 2; }
bash test/gpu/double/build.sh >/dev/null
echo "[demo] a GPU-double container on the test node: checkpoint through CRI, restore in a new pod" >&2
exec bash test/e2e/gpu-e2e.sh -- --workload double --gib 0.25 --floor 0.25 \
  --libcuda "$PWD/dist/gpu-double/libcuda.so.1" "$@"
