#!/usr/bin/env bash
# On the GPU machine: freeze → thaw real CUDA workloads through kybernate's GPU engine with both backends and
# print per-phase figures as markdown (cases 2 GiB, 16 GiB, 1 × 4 GiB and 4 × 4 GiB; about 2–3 minutes).
# Needs node (PATH or the gpu-lab bundle's /opt/kyb/bin), the compiled dist/ and the workload (built here with
# nvcc when missing). Usage: bash test/gpu/h200-engine-bench.sh [--cuda-checkpoint PATH] [--libcuda PATH] [--cases …]
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PATH:/opt/kyb/bin:/usr/local/cuda/bin"
[[ -d /usr/local/nvidia/lib64 ]] && export LD_LIBRARY_PATH="/usr/local/nvidia/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
command -v node >/dev/null || { echo "h200-engine-bench: no node on PATH (bring the gpu-lab bundle: source ../shared/gpu-lab/enter.sh)" >&2; exit 2; }
[[ -f dist/test/bench/gpu-engine.js ]] || { echo "h200-engine-bench: dist/ missing: run npm run build first and bring dist/ along" >&2; exit 2; }
workload=dist/gpu-workload/workload
if [[ ! -x "$workload" || test/gpu/workload.cu -nt "$workload" ]]; then
  command -v nvcc >/dev/null || { echo "h200-engine-bench: $workload missing and no nvcc to build it" >&2; exit 2; }
  mkdir -p dist/gpu-workload
  nvcc -arch=sm_90 -cudart static -O2 -o "$workload" test/gpu/workload.cu
fi
[[ $(id -u) -eq 0 ]] || echo "h200-engine-bench: not root; the driver's checkpoint API needs root" >&2
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
exec node dist/test/bench/gpu-engine.js --workload "$workload" "$@"
