#!/usr/bin/env bash
# Builds fleetd's Debian package, fleetd_VERSION_ARCH.deb, into OUTDIR (`make deb`: dist/).
#
#   scripts/build-deb.sh OUTDIR [WORKDIR]
#
# As a packager would, from the release: the sdist and the wheel built from it (as `make dist`),
# the sdist unpacked, then Debian's own tooling in it (dpkg-buildpackage and debhelper over
# debian/). Offline: the wheels of requirements/tls.lock come from the wheelhouse `make setup`
# filled, fleetd's from the build. WORKDIR (default build/deb) is made anew; it keeps the
# unpacked source, the .buildinfo and .changes files and the build's log.
#
# Environment: PYTHON, the Python with build and setuptools (default: .venv/bin/python);
# WHEELHOUSE, the locked wheels (default: .venv/wheelhouse).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: $0 OUTDIR [WORKDIR]" >&2; exit 2; }
out=$1
work=${2:-$repo/build/deb}
python=${PYTHON:-$repo/.venv/bin/python}
wheelhouse=${WHEELHOUSE:-$repo/.venv/wheelhouse}

fail() { echo "build-deb: $*" >&2; exit 1; }
for tool in dpkg-buildpackage dh; do
  command -v "$tool" >/dev/null \
    || fail "$tool is missing: apt-get install dpkg-dev debhelper (scripts/install-system-deps.sh)"
done
/usr/bin/python3.11 -c 'import ensurepip' 2>/dev/null \
  || fail "Debian's python3.11 with venv is missing: apt-get install python3.11-venv"
[ -x "$python" ] || fail "no $python: run make setup"
ls "$wheelhouse"/*.whl >/dev/null 2>&1 || fail "no wheels in $wheelhouse: run make setup"

version=$("$python" -c 'import sys; sys.path.insert(0, sys.argv[1]); import fleetd; print(fleetd.__version__)' "$repo")
debian=$(cd "$repo" && dpkg-parsechangelog --show-field Version)
[ "$version" = "$debian" ] || fail "debian/changelog's newest entry is $debian, fleetd is" \
  "$version: add an entry for $version (dch --newversion $version)"

rm -rf "$work"
mkdir -p "$work/dist" "$work/wheels" "$out"
log=$work/build.log
echo "build-deb: fleetd $version in $work (log: $log)"
# the sdist, then the wheel from the unpacked sdist; no build isolation, nothing downloaded
(cd "$work" && env -u PYTHONPATH PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 \
  "$python" -m build --no-isolation --outdir "$work/dist" "$repo") >>"$log" 2>&1 \
  || fail "python -m build failed: see $log"
tar -xzf "$work/dist/fleetd-$version.tar.gz" -C "$work"
ln "$wheelhouse"/*.whl "$work/wheels/" 2>/dev/null || cp "$wheelhouse"/*.whl "$work/wheels/"
cp "$work/dist/fleetd-$version-py3-none-any.whl" "$work/wheels/"
# dpkg-buildpackage writes the package beside the source directory, in $work
(cd "$work/fleetd-$version" && env -u PYTHONPATH -u VIRTUAL_ENV \
  FLEETD_WHEELHOUSE="$work/wheels" dpkg-buildpackage --build=binary --no-sign) >>"$log" 2>&1 \
  || { tail -n 30 "$log" >&2; fail "dpkg-buildpackage failed: see $log"; }
arch=$(dpkg-architecture --query DEB_HOST_ARCH)
deb=$work/fleetd_${version}_$arch.deb
[ -f "$deb" ] || fail "dpkg-buildpackage made no $deb"
cp "$deb" "$out/"
echo "build-deb: $out/$(basename "$deb")"
