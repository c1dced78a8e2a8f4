#!/usr/bin/env bash
# Builds the GPU test double (TEST ONLY) into dist/gpu-double/ (git-ignored): fake-cuda-workload (static, so
# it can also run in a busybox container), libcuda.so.1 (fake driver library) and cuda-checkpoint (fake tool).
# Idempotent: rebuilds only what is older than its sources. Prints the output directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../../../dist/gpu-double}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
command -v gcc >/dev/null || { echo "build.sh: gcc not found; install it (apt-get install gcc) to build the GPU double" >&2; exit 1; }
cflags=(-O2 -Wall -Wextra -Werror -std=gnu11 -I"$here")
common=("$here/fake-cuda.h" "$here/fake-ctl.c")

stale() { # target sources...
  local t="$1"; shift
  [[ -e "$t" ]] || return 0
  local s; for s in "$@"; do [[ "$s" -nt "$t" ]] && return 0; done
  return 1
}
inference="$here/../inference"
if stale "$out/fake-cuda-workload" "$here/fake-cuda-workload.c" "$here/fake-cuda.h" "$inference/http-serve.c" "$inference/http-serve.h" "$here/fake-traits.c" "$here/fake-traits.h"; then
  gcc "${cflags[@]}" -static -pthread -o "$out/fake-cuda-workload.tmp" "$here/fake-cuda-workload.c" "$inference/http-serve.c" "$here/fake-traits.c" -lm
  mv "$out/fake-cuda-workload.tmp" "$out/fake-cuda-workload"
fi
# The client pod of the inference-shaped tests (no "GPU"): static too, for a busybox pod.
if stale "$out/inference-client" "$inference/inference-client.c"; then
  gcc "${cflags[@]}" -static -o "$out/inference-client.tmp" "$inference/inference-client.c" -lm
  mv "$out/inference-client.tmp" "$out/inference-client"
fi
if stale "$out/libcuda.so.1" "$here/fake-libcuda.c" "${common[@]}"; then
  gcc "${cflags[@]}" -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$out/libcuda.so.1.tmp" "$here/fake-libcuda.c" "$here/fake-ctl.c"
  mv "$out/libcuda.so.1.tmp" "$out/libcuda.so.1"
fi
if stale "$out/cuda-checkpoint" "$here/fake-cuda-checkpoint.c" "${common[@]}"; then
  gcc "${cflags[@]}" -o "$out/cuda-checkpoint.tmp" "$here/fake-cuda-checkpoint.c" "$here/fake-ctl.c"
  mv "$out/cuda-checkpoint.tmp" "$out/cuda-checkpoint"
fi
echo "$out"
