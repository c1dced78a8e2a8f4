#!/bin/bash
# Writes a small busybox OCI image layout without docker: one layer (static busybox + applet symlinks + the
# usual top-level dirs) shared by two images, the busybox image the tests run and a "pause" image that
# only sleeps (the pod sandbox image; the node has no internet to fetch registry.k8s.io/pause).
# The build is reproducible (fixed mtimes/owners, gzip -n), so the same busybox gives the same digests.
# Usage: build-image.sh BUSYBOX OUT_TAR IMAGE_REF PAUSE_REF   (OUT_TAR: an OCI layout tar for `ctr images import`)
set -euo pipefail
# The layout writer is shared with the DaemonSet image (install/image/build.sh).
source "$(dirname "${BASH_SOURCE[0]}")/../../install/image/oci-layout.sh"
busybox=$1 out_tar=$2 image_ref=$3 pause_ref=$4

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=$work/layout
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,dev,proc,sys,run,root,home,var/tmp,tmp}
chmod 1777 "$rootfs/tmp" "$rootfs/var/tmp"
chmod 0700 "$rootfs/root"
install -m 0755 "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list-full); do
  [ -e "$rootfs/$applet" ] || ln -s /bin/busybox "$rootfs/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"

oci_init "$out"
read -r diff_id layer_digest layer_size < <(oci_layer "$rootfs" "$work")

path_env='"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"'
manifest_entries=()
for kind in image pause; do
  if [ "$kind" = image ]; then ref=$image_ref cmd='"Cmd":["sh"]'; else ref=$pause_ref cmd='"Entrypoint":["/bin/sleep","infinity"]'; fi
  printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Env":[%s],%s,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"kybernate test/node/build-image.sh"}]}' \
    "$path_env" "$cmd" "$diff_id" >"$work/config.json"
  manifest_entries+=("$(oci_image "$work/config.json" "$layer_digest" "$layer_size" "$ref" amd64 "$work")")
done
oci_write "$out_tar" "${manifest_entries[@]}"
