#!/bin/bash
# Builds the DaemonSet's image (install/kubernetes/daemonset.yaml) from this checkout, as an OCI image layout tar
# for `ctr images import` or any tool that reads one (skopeo, podman load). No docker and no base image: the
# image holds kybernate's own installed copy at /opt/kybernate-image (`kybernate install --no-systemd`: node,
# dist/, proto/, hooks/, production node_modules) plus exactly the shared libraries that copy loads and the
# shell its wrapper needs, so nothing has to be pulled and the machine that builds it may be bare.
# The build is reproducible (sorted entries, mtime 0, owner root, normalized modes, gzip -n): the same checkout,
# node and libraries give the same digests.
# Usage: install/image/build.sh [--out FILE.tar] [--ref NAME:TAG] [--node PATH] [--no-build]
#   --out       the tar to write (default dist/kybernate-VERSION-oci.tar)
#   --ref       the name the image gets on import (default localhost/kybernate:VERSION: a full name, as CRI
#               looks images up, so an image imported on a node runs without a registry)
#   --node      the node binary the image carries (default: node on PATH; Node 20 or later)
#   --no-build  use dist/ as it is (default: run `npm run build` first)
# Run as root, or where unprivileged user namespaces are allowed: the image is checked by running it in a chroot.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$here/oci-layout.sh"

die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

out='' ref='' node_bin='' build=yes
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=${2:?--out needs a file}; shift 2 ;;
    --out=*) out=${1#*=}; shift ;;
    --ref) ref=${2:?--ref needs NAME:TAG}; shift 2 ;;
    --ref=*) ref=${1#*=}; shift ;;
    --node) node_bin=${2:?--node needs a path}; shift 2 ;;
    --node=*) node_bin=${1#*=}; shift ;;
    --no-build) build=no; shift ;;
    -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
# readlink -f: the copy must be the binary itself, not a version manager's shim or a symlink.
node_bin=$(readlink -f "$(command -v "${node_bin:-node}")") || die "no node binary found; give one with --node"
for tool in ldd tar gzip sha256sum chroot; do command -v "$tool" >/dev/null || die "$tool is missing"; done

cd "$root"
version=$("$node_bin" -p 'require("./package.json").version')
description=$("$node_bin" -p 'require("./package.json").description')
license=$("$node_bin" -p 'require("./package.json").license')
ref=${ref:-localhost/kybernate:$version}
out=$(realpath -m "${out:-$root/dist/kybernate-$version-oci.tar}")
case "$("$node_bin" -p process.arch)" in
  x64) arch=amd64 ;;
  arm64) arch=arm64 ;;
  *) die "node's architecture $("$node_bin" -p process.arch) has no OCI name here" ;;
esac
[ "$("$node_bin" -p 'process.versions.node.split(".")[0]')" -ge 20 ] || die "$node_bin is older than Node 20"

# stdout stays the summary below; the compiler's messages go to stderr.
if [ "$build" = yes ]; then npm run build >&2; fi
[ -f dist/src/cli/main.js ] || die "dist/src/cli/main.js is missing: run npm run build (or drop --no-build)"

work=$(mktemp -d "${TMPDIR:-/tmp}/kybernate-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
prefix=/opt/kybernate-image
# A fixed umask: directory and file modes must not depend on the shell that runs the build.
umask 022
mkdir -p "$rootfs"/{etc,dev,proc,sys,run,tmp,opt,bin,usr/bin}

# 1. kybernate's own installed copy, exactly what `kybernate install` puts on a host: the init container
#    installs the host copy from it. The containerd config is not this machine's business, hence a path that
#    does not exist (install then only says it found none).
"$node_bin" dist/src/cli/main.js install --prefix "$rootfs$prefix" --no-systemd \
  --containerd-config "$work/no-containerd-config" --containerd /nonexistent >/dev/null
# Its manifest names paths as seen inside the image and no build time: the build must not depend on when or
# where it ran.
"$node_bin" -e '
  const fs = require("node:fs");
  const [file, rootfs] = process.argv.slice(1);
  const m = JSON.parse(fs.readFileSync(file, "utf8"));
  const strip = (p) => (p.startsWith(rootfs) ? p.slice(rootfs.length) : p);
  m.prefix = strip(m.prefix);
  m.installedAt = new Date(0).toISOString();
  m.dirs = m.dirs.map(strip).sort();
  m.files = m.files.map(strip).sort();
  fs.writeFileSync(file, `${JSON.stringify(m, null, 2)}\n`);
' "$rootfs$prefix/install-manifest.json" "$rootfs"

# 2. The wrapper bin/kybernate is a /bin/sh script that calls dirname and readlink: the image's only programs
#    besides node. They are the build machine's, like node.
install -m 0755 "$(readlink -f /bin/sh)" "$rootfs/bin/sh"
for tool in dirname readlink; do install -m 0755 "$(readlink -f "$(command -v "$tool")")" "$rootfs/usr/bin/$tool"; done

# 3. Shared libraries: what ldd says node, the shell tools and node's native addons (koffi, the driver
#    backend's FFI) load, plus the dynamic loader, each at the path the binaries name. ldd follows the whole
#    dependency tree. An addon built for another platform or libc (koffi ships musl builds too) does not
#    resolve here and node never loads it here, so it adds nothing.
libs=()
collect() { # binary -> appends the absolute paths ldd resolves; fails on a library it cannot find
  local listing line
  listing=$(ldd "$1" 2>&1) || return 1
  grep -q 'not found' <<<"$listing" && return 1
  while read -r line; do
    case "$line" in
      *'=> /'*) line=${line#*=> } ;;
      /*) ;;
      *) continue ;; # linux-vdso: the kernel's, not a file
    esac
    libs+=("${line%% (*}")
  done <<<"$listing"
}
collect "$rootfs$prefix/bin/node" || die "ldd cannot resolve every library of $node_bin"
for tool in bin/sh usr/bin/dirname usr/bin/readlink; do collect "$rootfs/$tool" || die "ldd cannot resolve $tool"; done
while IFS= read -r -d '' addon; do
  collect "$addon" || printf 'build.sh: %s does not load here (another platform or libc): no libraries added for it\n' "${addon#"$rootfs"}" >&2
done < <(find "$rootfs$prefix" -name '*.node' -type f -print0 | sort -z)
# The NVIDIA container toolkit injects the node's libcuda.so.1, libnvidia-ml and nvidia-smi into the daemon's
# container; they link glibc's libdl, libpthread and librt, which node itself may not load: add them beside libc.
libc=$(printf '%s\n' "${libs[@]}" | grep -m1 '/libc\.so\.6$') || die "node loads no libc.so.6?"
for extra in libdl.so.2 libpthread.so.0 librt.so.1; do
  [[ -e $(dirname "$libc")/$extra ]] && libs+=("$(dirname "$libc")/$extra")
done
for lib in $(printf '%s\n' "${libs[@]}" | sort -u); do
  # The soname path as a plain file (cp -L): the image has no symlink farm to resolve.
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done

# 4. Users for tools that look up uid 0 (and the kubelet's runAsUser: 0); /tmp for node's os.tmpdir().
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
# Modes from the checkout and npm's cache vary between machines; executables stay executable.
chmod -R u+rwX,go+rX,go-w "$rootfs"
chmod 1777 "$rootfs/tmp"

# 5. The image must run with nothing but its own files: the entrypoint (shell, wrapper, node, dist/ and its
#    modules) and the native addon node loads for the driver backend, in a chroot of the rootfs.
image_path=$prefix/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
in_rootfs() { # with the image's environment only: nothing of this shell's (NODE_OPTIONS, certificates) leaks in
  if [ "$(id -u)" = 0 ]; then
    env -i PATH="$image_path" chroot "$rootfs" "$@"
  else
    env -i PATH="$image_path" unshare --user --map-root-user chroot "$rootfs" "$@"
  fi
}
got=$(in_rootfs "$prefix/bin/kybernate" --version 2>&1) || die "the image's entrypoint does not run in its rootfs: $got"
[ "$got" = "$version" ] || die "the image's entrypoint printed '$got' for --version, expected $version"
got=$(in_rootfs "$prefix/bin/node" -e "require('$prefix/node_modules/koffi'); console.log('ok')" 2>&1) ||
  die "koffi's native addon does not load in the image's rootfs: $got"

# 6. One layer, its config (entrypoint, PATH, labels) and the layout.
oci_init "$work/layout"
read -r diff_id layer_digest layer_size < <(oci_layer "$rootfs" "$work" 6) # -6: 3x faster than -9 for 1% more
revision=''
if [ -e "$root/.git" ] && ! revision=$(git -C "$root" rev-parse --verify -q HEAD 2>/dev/null); then
  # e.g. git missing, or refusing a checkout another user owns: the image is the same, only unlabelled.
  printf 'build.sh: git cannot read %s: no org.opencontainers.image.revision label\n' "$root" >&2
  revision=''
fi
if [ -n "$revision" ]; then
  # Only what goes into the image counts as a local change.
  git -C "$root" diff --quiet HEAD -- src proto hooks install package.json package-lock.json tsconfig.json ||
    revision="$revision-dirty"
fi
"$node_bin" -e '
  const [entrypoint, path, version, description, license, revision, diffId, arch] = process.argv.slice(1);
  const labels = {
    "org.opencontainers.image.title": "kybernate",
    "org.opencontainers.image.description": description,
    "org.opencontainers.image.version": version,
    "org.opencontainers.image.licenses": license,
    ...(revision ? { "org.opencontainers.image.revision": revision } : {}),
  };
  const created = "1970-01-01T00:00:00Z";
  process.stdout.write(JSON.stringify({
    architecture: arch,
    os: "linux",
    created,
    config: { Entrypoint: [entrypoint], Env: [`PATH=${path}`], WorkingDir: "/", Labels: labels },
    rootfs: { type: "layers", diff_ids: [diffId] },
    history: [{ created, created_by: "kybernate install/image/build.sh" }],
  }));
' "$prefix/bin/kybernate" "$image_path" \
  "$version" "$description" "$license" "$revision" "$diff_id" "$arch" >"$work/config.json"
entry=$(oci_image "$work/config.json" "$layer_digest" "$layer_size" "$ref" "$arch" "$work")
mkdir -p "$(dirname "$out")"
oci_write "$out" "$entry"

digest=$("$node_bin" -p 'JSON.parse(process.argv[1]).digest' "$entry")
size=$(stat -c %s "$out")
printf 'image   %s\ndigest  %s\ntar     %s\nsize    %s bytes (%s MiB; layer %s MiB compressed)\n' \
  "$ref" "$digest" "$out" "$size" "$((size / 1048576))" "$((layer_size / 1048576))"
