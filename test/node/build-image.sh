#!/bin/bash
# Writes a small busybox OCI image layout without docker: one layer (static busybox + applet symlinks + the
# usual top-level dirs) shared by two images, the busybox image the tests run and a "pause" image that
# only sleeps (the pod sandbox image; the node has no internet to fetch registry.k8s.io/pause).
# The build is reproducible (fixed mtimes/owners, gzip -n), so the same busybox gives the same digests.
# Usage: build-image.sh BUSYBOX OUT_TAR IMAGE_REF PAUSE_REF   (OUT_TAR: an OCI layout tar for `ctr images import`)
set -euo pipefail
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

mkdir -p "$out/blobs/sha256"
blob() { # file -> stores it as a blob, prints "digest size"
  local d
  d=$(sha256sum "$1" | cut -d' ' -f1)
  cp "$1" "$out/blobs/sha256/$d"
  echo "sha256:$d $(stat -c %s "$1")"
}

(cd "$rootfs" && tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu -cf "$work/layer.tar" ./*)
diff_id=sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -9 -c "$work/layer.tar" >"$work/layer.tar.gz"
read -r layer_digest layer_size < <(blob "$work/layer.tar.gz")

path_env='"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"'
manifest_entries=()
for kind in image pause; do
  if [ "$kind" = image ]; then ref=$image_ref cmd='"Cmd":["sh"]'; else ref=$pause_ref cmd='"Entrypoint":["/bin/sleep","infinity"]'; fi
  printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Env":[%s],%s,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"kybernate test/node/build-image.sh"}]}' \
    "$path_env" "$cmd" "$diff_id" >"$work/config.json"
  read -r config_digest config_size < <(blob "$work/config.json")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%s}]}' \
    "$config_digest" "$config_size" "$layer_digest" "$layer_size" >"$work/manifest.json"
  read -r manifest_digest manifest_size < <(blob "$work/manifest.json")
  manifest_entries+=("$(printf '{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}' \
    "$manifest_digest" "$manifest_size" "$ref" "${ref##*:}")")
done
printf '{"imageLayoutVersion":"1.0.0"}' >"$out/oci-layout"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s,%s]}' \
  "${manifest_entries[0]}" "${manifest_entries[1]}" >"$out/index.json"
(cd "$out" && tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$out_tar.tmp" oci-layout index.json blobs)
mv "$out_tar.tmp" "$out_tar"
