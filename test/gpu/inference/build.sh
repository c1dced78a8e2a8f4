#!/usr/bin/env bash
# Builds the CUDA inference server for the GPU machine into dist/gpu-inference/ (needs nvcc; sm_90 for the H200).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../../../dist/gpu-inference}"
mkdir -p "$out"
command -v nvcc >/dev/null || { echo "build.sh: nvcc not found (CUDA toolkit)" >&2; exit 1; }
nvcc -arch="${CUDA_ARCH:-sm_90}" -cudart static -O2 -o "$out/inference-server" "$here/inference-server.cu" "$here/http-serve.c"
echo "$out/inference-server"
