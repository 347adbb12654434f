# fleetd — the two commands a newcomer runs are `make demo` and `make test`.
# Both set everything up from nothing: system packages (when root), the venv, the package.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/pip --quiet --disable-pip-version-check
LOCKS  := requirements/runtime.lock requirements/tls.lock requirements/test.lock \
          requirements/bundle.lock
WHEELHOUSE := $(VENV)/wheelhouse
PYTEST_ARGS ?=

.PHONY: all setup system-deps demo test test-quick test-faults lint bench lock dist deb bundle \
        sysext man clean

all: test

# Debian packages the tests and the sandbox need (systemd, dbus, util-linux's unshare/nsenter...).
system-deps:
	@scripts/install-system-deps.sh

# The locked set with its hashes (requirements/*.lock, scripts/lock.sh), then fleetd itself
# without dependencies and without build isolation (setuptools comes from the lock: no other
# download). The wheels are downloaded once into the venv's wheelhouse, which the distribution
# test installs from offline (tests/ops/test_distribution.py); with them those of bundle.lock
# (PyInstaller), which make bundle and its test build from, offline too.
$(STAMP): pyproject.toml $(LOCKS)
	@scripts/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(PIP) download --require-hashes --dest $(WHEELHOUSE) -r requirements/test.lock
	$(PIP) download --require-hashes --dest $(WHEELHOUSE) -r requirements/bundle.lock
	$(PIP) install --require-hashes --no-index --find-links $(WHEELHOUSE) -r requirements/test.lock
	$(PIP) install --no-deps --no-build-isolation --no-index -e .
	@touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check fleetd tests bench
	$(BIN)/lint-imports --no-cache

test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

# While iterating: everything but the tests marked slow (fault matrix, fuzzers, walkthrough).
test-quick: lint
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

# Only the fault matrix and the fuzzers, with their measured figures (FIGURE lines) shown.
test-faults: $(STAMP)
	@$(BIN)/pytest tests/faults tests/fuzz -s -p no:cacheprovider $(PYTEST_ARGS) >$(VENV)/faults.log 2>&1; \
	rc=$$?; grep -E '^FIGURE|^FAILED|^ERROR|[0-9]+ (passed|failed)' $(VENV)/faults.log; \
	echo "(full output: $(VENV)/faults.log)"; exit $$rc

demo: $(STAMP)
	$(BIN)/python -m fleetd.demo

# the bench extra (matplotlib, for the plot) is installed on top of the test set-up, locked
# fleetd's bytecode compiled first, as an installed package has it (pip compiles at install;
# the editable install here would otherwise compile fleetd's modules at every CLI start)
bench: $(STAMP)
	$(PIP) install --require-hashes -r requirements/bench.lock
	$(BIN)/python -m compileall -q fleetd
	@set -e; for b in bench/[!_]*.py; do [ -e "$$b" ] || continue; echo "== $$b"; $(BIN)/python $$b; done

# requirements/*.lock again from pyproject.toml (network; uv installed on demand); pass
# LOCK_ARGS=--upgrade or LOCK_ARGS='--upgrade-package NAME' to move versions
lock:
	scripts/lock.sh $(LOCK_ARGS)

# the sdist, and the wheel built from it, in dist/ (offline: setuptools and build are locked)
dist: $(STAMP)
	$(BIN)/python -m build --no-isolation --outdir dist .

# dist/fleetd_VERSION_ARCH.deb, Debian's package of fleetd (docs/packaging.md): the sdist unpacked,
# then dpkg-buildpackage and debhelper over debian/; a virtualenv of the locked runtime and the
# tls extra under /usr/lib/fleetd. Offline, like dist (scripts/build-deb.sh; log in build/deb/)
deb: $(STAMP)
	scripts/build-deb.sh dist

# build/bundle/fleetd/, fleetd with its own Python, fleetd and the locked runtime (PyInstaller,
# one directory: nothing of the host but glibc and the kernel), and the same as
# dist/fleetd-VERSION-linux-ARCH.tar.gz for any glibc Linux (docs/packaging.md). Offline
# (packaging/build-bundle.sh; log in build/bundle/)
bundle: $(STAMP)
	packaging/build-bundle.sh dist

# dist/fleetd-VERSION-x86-64.raw, that bundle as a systemd-sysext image for Flatcar and Fedora
# CoreOS: /usr/bin/fleetd and fleetctl, fleet.service and fleet.socket (docs/install-coreos.md;
# packaging/build-sysext.sh, squashfs-tools)
sysext: bundle
	packaging/build-sysext.sh dist

# man/fleetctl.1 and man/fleetd.8, made from the click definitions (scripts/man.py)
man: $(STAMP)
	$(BIN)/python scripts/man.py man

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
