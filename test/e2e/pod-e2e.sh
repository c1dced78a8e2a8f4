#!/usr/bin/env bash
# kybernate end to end with Kubernetes-shaped pods (issue 12): the same node as test/e2e/gpu-e2e.sh (same
# --bin-dir/--extra-bin-dir options), then dist/test/e2e/pod-e2e.js with the options after "--":
#   --scenario inference|ddp  --workload cuda|double  --gib 8  --server-bin PATH  --device cuda|cpu  --steps N
#   --checkpoint-at STEP  --python PATH  --python-mounts LIST  --memory-limit-mib N  --out FILE
# Build first: npm run build, bash test/gpu/double/build.sh (the client), bash test/gpu/inference/build.sh (CUDA).
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ -f dist/test/e2e/pod-e2e.js ]] || { echo "pod-e2e: dist/ is missing: run npm run build (and bring dist/ along)" >&2; exit 2; }
[[ -x dist/gpu-double/inference-client ]] || { echo "pod-e2e: dist/gpu-double/inference-client missing: bash test/gpu/double/build.sh" >&2; exit 2; }
KYBERNATE_E2E_DRIVER=dist/test/e2e/pod-e2e.js exec bash test/e2e/gpu-e2e.sh "$@"
