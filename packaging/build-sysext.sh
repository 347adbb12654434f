#!/usr/bin/env bash
# Lays the self-contained fleetd out as a systemd-sysext image (`make sysext`):
# fleetd-VERSION-ARCH.raw, a squashfs of /usr that systemd-sysext merges over the host's /usr on
# Flatcar Container Linux and Fedora CoreOS (docs/install-coreos.md).
#
#   packaging/build-sysext.sh OUTDIR [BUNDLE] [WORKDIR]
#
# BUNDLE is build-bundle.sh's directory (default build/bundle/fleetd); WORKDIR (default
# build/sysext) is made anew and keeps the image's tree. The image holds:
#   /usr/lib/fleetd/                 the bundle (fleetd, fleetctl -> fleetd, _internal/, LICENSE)
#   /usr/bin/fleetd, /usr/bin/fleetctl          symlinks into it
#   /usr/lib/systemd/system/fleet.service, fleet.socket     contrib/systemd's, as they are
#   /usr/lib/sysusers.d/fleetd.conf, /usr/lib/tmpfiles.d/fleetd.conf
#   /usr/lib/extension-release.d/extension-release.fleetd
# The extension is called `fleetd`: systemd-sysext takes an image's name from its file name, so
# a host has it as /etc/extensions/fleetd.raw (a link to the versioned file: upgrading is moving
# the link). Its release file says ID=_any (any OS: Flatcar's ID=flatcar and Fedora CoreOS's
# ID=fedora alike; the bundle needs only the kernel and glibc) and the architecture.
# Reproducible: files sorted, owned by root, dated SOURCE_DATE_EPOCH (the commit's time).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 1 ] && [ $# -le 3 ] || { echo "usage: $0 OUTDIR [BUNDLE] [WORKDIR]" >&2; exit 2; }
out=$1
bundle=${2:-$repo/build/bundle/fleetd}
work=${3:-$repo/build/sysext}

fail() { echo "build-sysext: $*" >&2; exit 1; }
command -v mksquashfs >/dev/null \
  || fail "mksquashfs is missing: apt-get install squashfs-tools (scripts/install-system-deps.sh)"
[ -x "$bundle/fleetd" ] || fail "no bundle at $bundle: run make bundle"
version=$("$bundle/fleetd" version) || fail "$bundle/fleetd does not start"
version=${version##* }
case $(uname -m) in
  x86_64) arch=x86-64 ;;
  aarch64) arch=arm64 ;;
  *) fail "no systemd architecture name known for $(uname -m)" ;;
esac
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null \
  || stat -c %Y "$repo/fleetd/__init__.py")}

rm -rf "$work"
root=$work/root
mkdir -p "$root/usr/bin" "$root/usr/lib/systemd/system" "$root/usr/lib/sysusers.d" \
  "$root/usr/lib/tmpfiles.d" "$root/usr/lib/extension-release.d" "$out"
cp -a "$bundle" "$root/usr/lib/fleetd"
ln -s ../lib/fleetd/fleetd "$root/usr/bin/fleetd"
ln -s ../lib/fleetd/fleetctl "$root/usr/bin/fleetctl"
contrib=$repo/contrib/systemd
grep -qx 'ExecStart=/usr/bin/fleetd' "$contrib/fleet.service" \
  || fail "contrib/systemd/fleet.service does not start /usr/bin/fleetd"
install -m 0644 "$contrib/fleet.service" "$contrib/fleet.socket" "$root/usr/lib/systemd/system/"
install -m 0644 "$contrib/sysusers.d/fleetd.conf" "$root/usr/lib/sysusers.d/fleetd.conf"
install -m 0644 "$contrib/tmpfiles.d/fleetd.conf" "$root/usr/lib/tmpfiles.d/fleetd.conf"
cat >"$root/usr/lib/extension-release.d/extension-release.fleetd" <<RELEASE
# fleetd $version, a systemd-sysext image (docs/install-coreos.md). Any OS: the bundle needs
# only the kernel and glibc. systemd 255 and later reload the units after a merge or refresh.
ID=_any
ARCHITECTURE=$arch
EXTENSION_RELOAD_MANAGER=1
RELEASE
chmod 0644 "$root/usr/lib/extension-release.d/extension-release.fleetd"
find "$root" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +

image=$out/fleetd-$version-$arch.raw
rm -f "$image"
mksquashfs "$root" "$image" -quiet -noappend -all-root -comp xz \
  >"$work/mksquashfs.log" 2>&1 \
  || { cat "$work/mksquashfs.log" >&2; fail "mksquashfs failed"; }
echo "build-sysext: $image ($(du -h "$image" | cut -f1))"
