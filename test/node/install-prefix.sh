#!/bin/bash
# Assembles the test node's private prefix ($TN/prefix) from Debian packages, without installing anything
# on the host: containerd 2.1+, runc 1.3+, CRIU 4.2+ and checkpointctl and kustomize (the DaemonSet render test) from Debian testing, docker-registry,
# busybox-static and patchelf from Debian 12, and the upstream NRI/CRI protos. runc, CRIU and checkpointctl
# need a newer glibc than Debian 12's, so they are patched to run on the prefix's own copy of it.
# Usage: bash test/node/install-prefix.sh   (up.sh calls it when the prefix is missing or incomplete)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SUITE=${KYBERNATE_TESTNODE_SUITE:-forky}
STABLE=${KYBERNATE_TESTNODE_STABLE:-bookworm}
APT=$TN/apt

testing_pkgs=(containerd runc criu checkpointctl kustomize golang-github-containerd-nri-dev golang-k8s-cri-api-dev
  golang-github-containerd-containerd-api-dev containernetworking-plugins
  libcompel1 libc6 libseccomp2 libgnutls30t64 libnftables1 libnl-3-200 libprotobuf-c1 libbsd0 libnet9 libuuid1
  libnettle8t64 libhogweed6t64 libgmp10 libidn2-0 libp11-kit0 libtasn1-6 libunistring5 libffi8 libmnl0 libnftnl11
  libjansson4 libxtables12 libmd0 libedit2 libtinfo6 libbrotli1 libzstd1 zlib1g iptables libip4tc2 libip6tc2
  libnetfilter-conntrack3 libnfnetlink0)
stable_pkgs=(docker-registry busybox-static patchelf)

# The mirror this machine is already configured with; no host name is written anywhere.
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list; configure apt first"
command -v dpkg-deb >/dev/null || die "dpkg-deb is missing; this script needs a Debian host"

mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial"
cat >"$APT/sources.list" <<EOF
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $SUITE main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $STABLE main
EOF
A=(-o Dir::Etc::SourceList="$APT/sources.list" -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists="$APT/lists"
  -o Dir::Cache="$APT/cache" -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null
  -o APT::Sandbox::User=root -o APT::Default-Release="$SUITE")
say "fetching package lists for $SUITE and $STABLE from $mirror"
apt-get "${A[@]}" update -qq || die "apt-get update with $APT/sources.list failed; check network access to $mirror"

work=$(mktemp -d "$TN/install.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/debs" "$work/x"
say "downloading ${#testing_pkgs[@]} packages from $SUITE and ${#stable_pkgs[@]} from $STABLE"
(cd "$work/debs" && apt-get "${A[@]}" download "${testing_pkgs[@]/%//$SUITE}" "${stable_pkgs[@]/%//$STABLE}" >/dev/null) ||
  die "downloading packages failed (apt-get download, config $APT/sources.list); a package may have been renamed in $SUITE"
for d in "$work"/debs/*.deb; do dpkg-deb -x "$d" "$work/x"; done

P=$work/prefix
mkdir -p "$P/bin" "$P/lib" "$P/share"
x=$work/x
cp -a "$x/usr/lib/x86_64-linux-gnu/." "$P/lib/"
rm -rf "$P/lib/gconv" "$P/lib/audit"
cp "$x/usr/bin/containerd" "$x/usr/bin/containerd-shim-runc-v2" "$x/usr/bin/ctr" "$x/usr/sbin/runc" \
  "$x/usr/sbin/criu" "$x/usr/bin/checkpointctl" "$x/usr/bin/docker-registry" "$x/usr/bin/patchelf" \
  "$x/usr/sbin/xtables-nft-multi" "$x/usr/bin/kustomize" "$P/bin/"
cp "$x/bin/busybox" "$P/bin/busybox" 2>/dev/null || cp "$x/usr/bin/busybox" "$P/bin/busybox"
# CRIU locks the network of a container with its own namespace through iptables-restore (found on PATH).
for t in iptables iptables-restore iptables-save ip6tables ip6tables-restore ip6tables-save; do
  ln -sf xtables-nft-multi "$P/bin/$t"
done
cp -a "$x/usr/share/gocode" "$P/share/"
# The CNI plugins (bridge, host-local, loopback, portmap, …) for pod-network pods of the test node.
mkdir -p "$P/libexec/cni"
cp -a "$x/usr/lib/cni/." "$P/libexec/cni/"

# The final prefix path is baked into the patched binaries, so patch for $PREFIX, not for the staging dir.
for b in runc criu checkpointctl xtables-nft-multi; do
  "$P/bin/patchelf" --set-interpreter "$PREFIX/lib/ld-linux-x86-64.so.2" --force-rpath --set-rpath "$PREFIX/lib" "$P/bin/$b"
done

rm -rf "$PREFIX"
mv "$P" "$PREFIX"

v_containerd=$("$PREFIX/bin/containerd" --version | awk '{print $3}' | sed 's/+.*//')
v_runc=$("$PREFIX/bin/runc" --version | awk '/^runc version/ {print $3}' | sed 's/+.*//')
v_criu=$("$PREFIX/bin/criu" --version | awk '/^Version:/ {print $2}')
# Debian's checkpointctl build reports no version of its own: take the package's.
v_checkpointctl=$(dpkg-deb -f "$(ls "$work"/debs/checkpointctl_*.deb)" Version | sed 's/+.*//')
v_registry=$("$PREFIX/bin/docker-registry" --version | awk '{print $3}' | sed 's/^v//; s/+.*//')
at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]; }
at_least "$v_containerd" 2.1 || die "containerd $v_containerd from $SUITE is below 2.1 (CRI checkpoint/restore needs 2.1+); set KYBERNATE_TESTNODE_SUITE to a suite that has it"
at_least "$v_runc" 1.3 || die "runc $v_runc from $SUITE is below 1.3; set KYBERNATE_TESTNODE_SUITE to a suite that has it"
at_least "$v_criu" 4 || die "CRIU $v_criu from $SUITE is below 4.0 (Debian 12's 3.17 fails on this kernel); set KYBERNATE_TESTNODE_SUITE"
for f in github.com/containerd/nri/pkg/api/api.proto k8s.io/cri-api/pkg/apis/runtime/v1/api.proto \
  github.com/containerd/containerd/api/services/tasks/v1/tasks.proto github.com/containerd/containerd/api/types/task/task.proto; do
  [ -f "$PREFIX/share/gocode/src/$f" ] || die "$PREFIX/share/gocode/src/$f is missing from the downloaded -dev packages"
done

node -e '
  const [containerd, runc, criu, checkpointctl, registry, prefix] = process.argv.slice(1);
  process.stdout.write(JSON.stringify({ prefix, versions: { containerd, runc, criu, checkpointctl, registry } }, null, 2) + "\n");
' "$v_containerd" "$v_runc" "$v_criu" "$v_checkpointctl" "$v_registry" "$PREFIX" >"$PREFIX/installed.json"
say "prefix ready: containerd $v_containerd, runc $v_runc, CRIU $v_criu, checkpointctl $v_checkpointctl, docker-registry $v_registry"
