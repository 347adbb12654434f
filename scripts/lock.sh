#!/usr/bin/env bash
# Regenerates the lock files in requirements/ from pyproject.toml's ranges: exact versions, each
# with the sha256 of every file PyPI has for that release (any platform, Python >= 3.11), so
# `pip install --require-hashes -r requirements/X.lock` installs exactly what we test.
#
#   runtime.lock  fleetd's dependencies: what a host needs for fleetd and fleetctl
#   tls.lock      runtime + the `tls` extra (cryptography): the sandbox's certificates
#   test.lock     runtime + tls + the `test` extra: what `make setup` installs for the suite
#   bench.lock    test + the `bench` extra: what `make bench` adds
#   bundle.lock   runtime + PyInstaller (requirements/bundle.in): what `make bundle` builds the
#                 self-contained fleetd with (packaging/bundle.sh), in a venv of its own
#
# Each file is complete for its purpose, and each is resolved under the previous one as a
# constraint, so a package has the same version in every file it appears in.
# Without options a pinned version stays as long as pyproject.toml's range admits it; to move:
#   scripts/lock.sh --upgrade                  every package to its newest admitted release
#   scripts/lock.sh --upgrade-package NAME ... only these
# The resolver (uv, a pinned release) is installed on demand into a venv under ~/.cache; it is a
# tool of this script only: neither `make setup` nor the suite needs it.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.8
tools=${XDG_CACHE_HOME:-$HOME/.cache}/fleetd-lock/uv-$UV_VERSION
if [ ! -x "$tools/bin/uv" ]; then
  python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi

compile() {  # compile OUTPUT [uv pip compile options...]
  local out=$1
  shift
  "$tools/bin/uv" pip compile pyproject.toml --quiet --universal --python-version 3.11 \
    --generate-hashes --custom-compile-command "scripts/lock.sh" \
    --output-file "requirements/$out" "$@"
}

mkdir -p requirements
compile runtime.lock "$@"
compile tls.lock --extra tls --constraint requirements/runtime.lock "$@"
compile test.lock --extra tls --extra test --constraint requirements/tls.lock "$@"
compile bench.lock --extra tls --extra test --extra bench --constraint requirements/test.lock "$@"
compile bundle.lock requirements/bundle.in --constraint requirements/bench.lock "$@"
echo "lock: requirements/{runtime,tls,test,bench,bundle}.lock written; check \`git diff requirements/\`" >&2
