#!/usr/bin/env bash
# Builds the self-contained fleetd (`make bundle`): one directory holding its own Python, fleetd
# and its locked runtime, needing nothing of the host but the C library and the kernel.
#
#   packaging/build-bundle.sh OUTDIR [WORKDIR]
#
# PyInstaller (requirements/bundle.lock, in a venv of its own made anew in WORKDIR) builds
# packaging/fleetd.spec from this tree: WORKDIR/fleetd/ is the bundle — `fleetd`, the program,
# `fleetctl`, a symlink to it (the name it is started under chooses the command), `_internal/`,
# and LICENSE. Into OUTDIR goes fleetd-VERSION-linux-ARCH.tar.gz, that directory as
# fleetd-VERSION/ (sorted, owned by root, dated SOURCE_DATE_EPOCH: the commit's time). WORKDIR
# (default build/bundle) also keeps files.txt, the bundle's file list (two builds of one commit
# give the same), and build.log. Offline: the wheels come from the wheelhouse `make setup`
# filled. make sysext then lays the bundle out as a systemd-sysext image (build-sysext.sh).
#
# Environment: PYTHON, a CPython 3.11 built with --enable-shared (PyInstaller bundles its
# libpython; default: the one .venv was made from); WHEELHOUSE (default: .venv/wheelhouse).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: $0 OUTDIR [WORKDIR]" >&2; exit 2; }
out=$1
work=${2:-$repo/build/bundle}
python=${PYTHON:-$repo/.venv/bin/python}
wheelhouse=${WHEELHOUSE:-$repo/.venv/wheelhouse}

fail() { echo "build-bundle: $*" >&2; exit 1; }
[ -x "$python" ] || fail "no $python: run make setup"
for tool in objdump strip; do  # PyInstaller reads and strips the ELF files it bundles
  command -v "$tool" >/dev/null \
    || fail "$tool is missing: apt-get install binutils (scripts/install-system-deps.sh)"
done
shared=$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("Py_ENABLE_SHARED"))')
[ "$shared" = 1 ] || fail "$python is not built with --enable-shared: PyInstaller needs its" \
  "libpython (pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install 3.11)"
ls "$wheelhouse"/pyinstaller-*.whl >/dev/null 2>&1 \
  || fail "no PyInstaller wheel in $wheelhouse: run make setup (it downloads bundle.lock too)"

version=$("$python" -c 'import sys; sys.path.insert(0, sys.argv[1]); import fleetd; print(fleetd.__version__)' "$repo")
arch=$(uname -m)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null \
  || stat -c %Y "$repo/fleetd/__init__.py")}

rm -rf "$work"
mkdir -p "$work" "$out"
log=$work/build.log
echo "build-bundle: fleetd $version in $work (log: $log)"
"$python" -m venv "$work/venv" >>"$log" 2>&1
env -u PYTHONPATH -u VIRTUAL_ENV PIP_CONFIG_FILE=/dev/null "$work/venv/bin/pip" --quiet \
  --disable-pip-version-check install --require-hashes --no-index --find-links "$wheelhouse" \
  -r "$repo/requirements/bundle.lock" >>"$log" 2>&1 || fail "installing bundle.lock failed: see $log"
(cd "$work" && env -u PYTHONPATH -u VIRTUAL_ENV PYTHONHASHSEED=0 "$work/venv/bin/pyinstaller" \
  --noconfirm --clean --log-level WARN --distpath "$work" --workpath "$work/pyinstaller" \
  "$repo/packaging/fleetd.spec") >>"$log" 2>&1 \
  || { tail -n 30 "$log" >&2; fail "pyinstaller failed: see $log"; }
bundle=$work/fleetd
ln -s fleetd "$bundle/fleetctl"
cp "$repo/LICENSE" "$bundle/LICENSE"
answer=$("$bundle/fleetctl" version) || fail "the bundle's fleetctl does not start: $answer"
[ "$answer" = "fleetctl version $version" ] || fail "the bundle's fleetctl says: $answer"
(cd "$work" && find fleetd | LC_ALL=C sort) >"$work/files.txt"

tarball=$out/fleetd-$version-linux-$arch.tar.gz
tar --create --directory="$work" --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 \
  --numeric-owner --transform="flags=r;s,^fleetd,fleetd-$version," fleetd | gzip -n -9 >"$tarball"
echo "build-bundle: $bundle ($(du -sh "$bundle" | cut -f1)), $tarball ($(du -h "$tarball" | cut -f1))"
