#!/usr/bin/env bash
# On a node with two GPUs of one model: a CUDA workload frozen on one GPU and thawed onto the other through
# kybernate's engine with a UUID device map (`kybernate gpu thaw --device-map OLD=NEW`), for each backend; the
# workload must go on with its VRAM verified, now on the second GPU. Needs root, node, dist/ and the workload.
# Usage: bash test/e2e/gpu-device-map.sh [--cuda-checkpoint PATH] [--gib N]
set -euo pipefail
cd "$(dirname "$0")/../.."
tool="" gib=2
while [[ $# -gt 0 ]]; do
  case $1 in --cuda-checkpoint) tool=$2; shift 2 ;; --gib) gib=$2; shift 2 ;; *) echo "unknown option $1" >&2; exit 2 ;; esac
done
mapfile -t uuids < <(nvidia-smi --query-gpu=uuid --format=csv,noheader)
[[ ${#uuids[@]} -ge 2 ]] || { echo "gpu-device-map: needs two GPUs, found ${#uuids[@]}" >&2; exit 2; }
from=${uuids[0]} to=${uuids[1]}
workload=dist/gpu-workload/workload
backends=(driver)
[[ -n $tool ]] && backends+=(binary)
fail=0
for backend in "${backends[@]}"; do
  status=$(mktemp)
  "$workload" --gib "$gib" --status "$status" --verify-every 1 >/dev/null &
  pid=$!
  until grep -q '"counter"' "$status" 2>/dev/null; do sleep 0.2; done
  args=(--gpu-backend "$backend" --pid "$pid")
  [[ $backend == binary ]] && args+=(--cuda-checkpoint "$tool")
  node dist/src/cli/main.js gpu freeze "${args[@]}"
  node dist/src/cli/main.js gpu thaw "${args[@]}" --device-map "$from=$to"
  before=$(cat "$status")
  sleep 3
  after=$(cat "$status")
  on=$(nvidia-smi --query-compute-apps=pid,gpu_uuid --format=csv,noheader | awk -F', ' -v p="$pid" '$1 == p {print $2}')
  echo "$backend: before $before"
  echo "$backend: after  $after (pid $pid on ${on:-?}; mapped $from -> $to)"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  v0=$(sed -E 's/.*"verified":([0-9]+).*/\1/' <<<"$before"); v1=$(sed -E 's/.*"verified":([0-9]+).*/\1/' <<<"$after")
  f1=$(sed -E 's/.*"verifyFailures":([0-9]+).*/\1/' <<<"$after")
  if [[ $on == "$to" && $v1 -gt $v0 && $f1 -eq 0 ]]; then echo "$backend: PASS (running on the other GPU, VRAM verified)"; else echo "$backend: FAIL"; fail=1; fi
  rm -f "$status"
done
exit $fail
