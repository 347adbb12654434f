#!/usr/bin/env bash
# Installs the Debian packages fleetd's tests and sandbox need, when missing and when root.
# Not root: says what is missing and goes on (tests that need them skip with a reason).
set -euo pipefail

declare -A need=(
  [systemd]=systemd          # systemd --user managers, systemctl, journalctl, journald
  [dbus-daemon]=dbus         # private buses, one per sandbox machine
  [unshare]=util-linux       # mount namespaces
  [nsenter]=util-linux
  [ip]=iproute2              # addresses and network namespaces
  [ps]=procps
  [ssh]=openssh-client       # fleetctl ssh
  [sshd]=openssh-server      # the real sshd fleetctl ssh is tested against
  [chromium]=chromium        # the headless browser fleetctl dashboard's tests drive
  [chromedriver]=chromium-driver
  [dpkg-buildpackage]=dpkg-dev # make deb: Debian's package (docs/packaging.md)
  [dh]=debhelper
  [setpriv]=util-linux         # the package's test runs fleetctl as other users
  [objdump]=binutils           # make bundle: PyInstaller reads (and strips) the ELF files it bundles
  [mksquashfs]=squashfs-tools  # make sysext: the systemd-sysext image (docs/install-coreos.md)
  [unsquashfs]=squashfs-tools
  [systemd-sysext]=systemd     # its test merges the image in a mount namespace
)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/lib/systemd/$cmd" ] || [ -x "/usr/sbin/$cmd" ] \
    || missing+=("${need[$cmd]}")
done
[ -x /lib/systemd/systemd-journald ] || missing+=(systemd)
# make deb: the package's virtualenv is Debian's python3.11's (not whichever python3 is first on
# PATH), made with its venv module
/usr/bin/python3.11 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3.11-venv)
[ ${#missing[@]} -eq 0 ] && exit 0
pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
if [ "$(id -u)" -ne 0 ]; then
  echo "install-system-deps: missing Debian packages: $pkgs(not root: not installing them;" \
       "tests that need them will skip)" >&2
  exit 0
fi
echo "install-system-deps: installing $pkgs" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
