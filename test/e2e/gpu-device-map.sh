#!/usr/bin/env bash
# On a node with two GPUs of one model (A, B): which UUID device maps the driver takes. Each trial runs the
# CUDA workload (on its device 0), freezes it through kybernate's engine (`kybernate gpu freeze`), thaws it
# with a map (`kybernate gpu thaw --device-map …`), then reports the GPU it runs on and whether its VRAM still
# verifies. A refused map leaves the engine's rollback to bring it back onto its own GPU; the trial says so.
# Trials: the process sees both GPUs, only A through CUDA_VISIBLE_DEVICES, or only A's device node (a private
# /dev, as in a container given one GPU); each with the map A→B alone and the full permutation A→B,B→A; for the
# driver backend and, with --cuda-checkpoint, NVIDIA's binary. Each trial also prints the GPU device nodes the
# process holds open and where nvidia-smi lists it. Needs root, node, dist/ and dist/gpu-workload/workload.
# Usage: bash test/e2e/gpu-device-map.sh [--cuda-checkpoint PATH] [--gib N]
set -uo pipefail
cd "$(dirname "$0")/../.."
tool="" gib=1
while [[ $# -gt 0 ]]; do
  case $1 in --cuda-checkpoint) tool=$2; shift 2 ;; --gib) gib=$2; shift 2 ;; *) echo "unknown option $1" >&2; exit 2 ;; esac
done
mapfile -t uuids < <(nvidia-smi --query-gpu=uuid --format=csv,noheader)
[[ ${#uuids[@]} -ge 2 ]] || { echo "gpu-device-map: needs two GPUs, found ${#uuids[@]}" >&2; exit 2; }
A=${uuids[0]} B=${uuids[1]}
workload=dist/gpu-workload/workload
[[ -n $tool ]] && "$tool" --help 2>&1 | grep -i -A3 "device-map" | sed 's/^/cuda-checkpoint --help: /'
pid=""
trap '[[ -n $pid ]] && kill -9 "$pid" 2>/dev/null' EXIT
field() { sed -nE "s/.*\"$1\":([0-9]+).*/\1/p" "$2"; }
gpu_of() { nvidia-smi --query-compute-apps=pid,gpu_uuid --format=csv,noheader | awk -F', ' -v p="$1" '$1 == p {print $2}'; }
name() { [[ $1 == "$A" ]] && echo A || { [[ $1 == "$B" ]] && echo B || echo "${1:-none}"; }; }

results=()
trial() { # backend, visible ("both" | "A"), map
  local backend=$1 visible=$2 map=$3 status log args v0 v1 f1 on rc
  status=$(mktemp) log=$(mktemp)
  echo "=== $backend, sees $visible, map $(sed "s/$A/A/g; s/$B/B/g" <<<"$map")"
  if [[ $visible == A ]]; then
    CUDA_VISIBLE_DEVICES=$A "$workload" --gib "$gib" --status "$status" --verify-every 1 >/dev/null 2>&1 &
  elif [[ $visible == A-node ]]; then
    # A private /dev with A's node only (A is /dev/nvidia0 here), like a container given one GPU.
    unshare -m bash -c 'set -e; d=$(mktemp -d); mount -t tmpfs tmpfs "$d"
      cp -a /dev/null /dev/zero /dev/urandom /dev/nvidiactl /dev/nvidia0 /dev/nvidia-uvm /dev/nvidia-uvm-tools "$d"/
      mount --bind "$d" /dev; exec "$@"' _ "$workload" --gib "$gib" --status "$status" --verify-every 1 >/dev/null 2>&1 &
  else
    "$workload" --gib "$gib" --status "$status" --verify-every 1 >/dev/null 2>&1 &
  fi
  pid=$!
  for _ in $(seq 300); do grep -q '"counter"' "$status" 2>/dev/null && break; sleep 0.1; done
  echo "    opened: $(ls -lL /proc/"$pid"/fd 2>/dev/null | awk '$5 == "195," && $6 < 254 {print "minor " $6}' | sort -u | tr '\n' ' ')" \
    "nvidia-smi: $(nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv,noheader | grep "^$pid," | tr '\n' ' ')"
  args=(--gpu-backend "$backend" --pid "$pid")
  [[ $backend == binary ]] && args+=(--cuda-checkpoint "$tool")
  timeout 120 node dist/src/cli/main.js gpu freeze "${args[@]}" >"$log" 2>&1
  v0=$(field verified "$status")
  timeout 120 node dist/src/cli/main.js gpu thaw "${args[@]}" --device-map "$map" >>"$log" 2>&1
  rc=$?
  sleep 3
  on=$(gpu_of "$pid")
  v1=$(field verified "$status") f1=$(field verifyFailures "$status")
  local readable_map=${map//$A/A}
  readable_map=${readable_map//$B/B}
  local verdict
  if [[ $rc -eq 0 && -n $on && ${v1:-0} -gt ${v0:-0} && ${f1:-1} -eq 0 ]]; then verdict="taken: runs on $(name "$on"), VRAM verified"
  elif [[ -n $on && ${v1:-0} -gt ${v0:-0} && ${f1:-1} -eq 0 ]]; then verdict="refused ($(grep -o 'CUDA_ERROR_[A-Z_]*\|exit [0-9]*: [^"]*' "$log" | head -1)); rollback: runs on $(name "$on"), VRAM verified"
  else verdict="FAILED (thaw rc $rc, on $(name "$on"), verified $v0→$v1, failures $f1)"; fi
  results+=("| $backend | $visible | $readable_map | $verdict |")
  echo "--- $backend, sees $visible, map $readable_map: $verdict"
  sed 's/^/    /' "$log" | cut -c1-400 | tail -6
  kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; pid=""
  rm -f "$status" "$log"
}

backends=(driver)
[[ -n $tool ]] && backends+=(binary)
visibles=(${KYB_VISIBLE:-both A A-node})
for backend in "${backends[@]}"; do
  for visible in "${visibles[@]}"; do
    trial "$backend" "$visible" "$A=$B"
    trial "$backend" "$visible" "$A=$B,$B=$A"
  done
done
echo
echo "GPUs: A=$A, B=$B ($(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1))"
echo "| backend | process sees | device map | result |"
echo "|---|---|---|---|"
printf '%s\n' "${results[@]}"
