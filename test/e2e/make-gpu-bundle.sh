#!/usr/bin/env bash
# Builds what a GPU host without a package registry needs for test/e2e/gpu-e2e.sh and the engine benchmark, as
# ONE archive under the device tool's 64 MiB limit: the gpu-lab bundle (node, containerd, runc, CRIU under
# /opt/kyb; ../shared/gpu-lab/make-bundle.sh builds it) plus /opt/kyb/extra/{docker-registry,busybox} from the
# test node's prefix, /opt/kyb/bin/ip (iproute2, for the pod network) and /opt/kyb/node_modules (production
# dependencies only). iptables is dropped (host-network
# pods only; CRIU locks the network with nftables).
# Usage: bash test/e2e/make-gpu-bundle.sh [GPU_LAB_BUNDLE] [OUT]   (defaults: .gpu-lab/bundle.tar.xz, .gpu-lab2/bundle.tar.xz)
# On the GPU host:  xz -dc .gpu-lab2/bundle.tar.xz | tar -C / -xf -; ln -sfn /opt/kyb/node_modules node_modules
#   export PATH=/opt/kyb/bin:$PATH; bash test/e2e/gpu-e2e.sh --bin-dir /opt/kyb/bin --extra-bin-dir /opt/kyb/extra -- …
set -euo pipefail
cd "$(dirname "$0")/../.."
in=${1:-.gpu-lab/bundle.tar.xz} out=${2:-.gpu-lab2/bundle.tar.xz}
[[ -f $in ]] || { echo "make-gpu-bundle: $in missing: run bash ../shared/gpu-lab/make-bundle.sh first" >&2; exit 2; }
for b in docker-registry busybox; do
  [[ -x .testnode/prefix/bin/$b ]] || { echo "make-gpu-bundle: .testnode/prefix/bin/$b missing: run npm run testnode:up first" >&2; exit 2; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
xz -dc "$in" | tar -C "$work" -xf -
mkdir -p "$work/opt/kyb/extra" "$work/prod"
cp .testnode/prefix/bin/docker-registry .testnode/prefix/bin/busybox "$work/opt/kyb/extra/"
# The pod network (test/node/pod-network.sh): bridge, host-local, loopback.
mkdir -p "$work/opt/kyb/extra/cni"
cp .testnode/prefix/libexec/cni/bridge .testnode/prefix/libexec/cni/host-local .testnode/prefix/libexec/cni/loopback "$work/opt/kyb/extra/cni/"
# iproute2's ip, which pod-network.sh needs, with its libraries, run on the bundle's own C library (as the
# gpu-lab bundle does for its binaries).
ip_bin=$(command -v ip)
cp "$ip_bin" "$work/opt/kyb/bin/ip"
for lib in $(ldd "$ip_bin" | awk '$3 ~ /^\// {print $3}'); do
  name=$(basename "$lib")
  [[ -e $work/opt/kyb/lib/$name ]] || cp -L "$lib" "$work/opt/kyb/lib/$name"
done
command -v patchelf >/dev/null || { apt-get update -qq && apt-get install -y -qq patchelf >/dev/null; }
patchelf --set-interpreter /opt/kyb/lib/ld-linux-x86-64.so.2 --force-rpath --set-rpath /opt/kyb/lib "$work/opt/kyb/bin/ip"
cp package.json package-lock.json "$work/prod/"
(cd "$work/prod" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund >/dev/null)
mv "$work/prod/node_modules" "$work/opt/kyb/node_modules"
rm -f "$work"/opt/kyb/bin/xtables-nft-multi "$work"/opt/kyb/bin/ip*tables*
mkdir -p "$(dirname "$out")"
tar -C "$work" -cf - opt | xz -T0 -9 >"$out"
size=$(stat -c %s "$out")
echo "make-gpu-bundle: $out, $((size / 1048576)) MiB (the device tool carries 64 MiB in all: bring dist/src, dist/test and the workload beside it)"
