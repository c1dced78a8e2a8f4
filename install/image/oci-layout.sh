# Writes an OCI image layout by hand: no docker, no registry, no base image. Sourced by install/image/build.sh
# (the DaemonSet's image) and test/node/build-image.sh (the test node's busybox image).
# Reproducible: tar entries sorted by name with mtime 0 and owner root, gzip without a name or a time stamp,
# JSON written byte for byte, so the same rootfs gives the same digests on any machine.
# Usage (the caller has set -euo pipefail):
#   oci_init DIR                          the layout is assembled in DIR
#   oci_layer ROOTFS WORK [GZIP_LEVEL]    -> "diff_id digest size" of ROOTFS as one gzipped layer
#   oci_blob FILE                         -> "digest size", FILE stored as a blob
#   oci_image CONFIG_FILE LAYER_DIGEST LAYER_SIZE REF ARCH WORK
#                                         -> the index entry naming REF (config + manifest stored as blobs)
#   oci_write OUT_TAR ENTRY...            the layout as one tar, importable with `ctr images import`

oci_init() {
  OCI_DIR=$1
  mkdir -p "$OCI_DIR/blobs/sha256"
}

oci_blob() {
  local d
  d=$(sha256sum "$1" | cut -d' ' -f1)
  cp "$1" "$OCI_DIR/blobs/sha256/$d"
  echo "sha256:$d $(stat -c %s "$1")"
}

oci_layer() {
  local rootfs=$1 work=$2 level=${3:-9} diff_id
  # ./* rather than .: the layer holds no entry for "." itself, so the runtime keeps its own root's mode.
  (cd "$rootfs" && tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu -cf "$work/layer.tar" ./*)
  # The config names the uncompressed layer (diff_id), the manifest the compressed blob.
  diff_id=sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
  gzip -n -"$level" -c "$work/layer.tar" >"$work/layer.tar.gz"
  rm -f "$work/layer.tar"
  echo "$diff_id $(oci_blob "$work/layer.tar.gz")"
}

oci_image() {
  local config=$1 layer_digest=$2 layer_size=$3 ref=$4 arch=$5 work=$6 config_digest config_size manifest_digest manifest_size
  read -r config_digest config_size < <(oci_blob "$config")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%s}]}' \
    "$config_digest" "$config_size" "$layer_digest" "$layer_size" >"$work/manifest.json"
  read -r manifest_digest manifest_size < <(oci_blob "$work/manifest.json")
  # io.containerd.image.name: the name `ctr images import` gives the image; ref.name: the OCI tag.
  printf '{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}' \
    "$manifest_digest" "$manifest_size" "$arch" "$ref" "${ref##*:}"
}

oci_write() {
  local out_tar
  out_tar=$(realpath -m "$1")
  shift
  printf '{"imageLayoutVersion":"1.0.0"}' >"$OCI_DIR/oci-layout"
  local IFS=,
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s]}' "$*" >"$OCI_DIR/index.json"
  # Written beside the target, then renamed: a reader never sees half a tar.
  (cd "$OCI_DIR" && tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$out_tar.tmp" oci-layout index.json blobs)
  mv "$out_tar.tmp" "$out_tar"
}
