# fleetd — the two commands a newcomer runs are `make demo` and `make test`.
# Both set everything up from nothing: system packages (when root), the venv, the package.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: all setup system-deps demo test test-quick test-faults lint bench man clean

all: test

# Debian packages the tests and the sandbox need (systemd, dbus, util-linux's unshare/nsenter...).
system-deps:
	@scripts/install-system-deps.sh

$(STAMP): pyproject.toml requirements.lock
	@scripts/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[test]'
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

# the bench extra (matplotlib, for the plot) is installed on top of the test set-up
bench: $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[bench]'
	@set -e; for b in bench/[!_]*.py; do [ -e "$$b" ] || continue; echo "== $$b"; $(BIN)/python $$b; done

# man/fleetctl.1 and man/fleetd.8, made from the click definitions (scripts/man.py)
man: $(STAMP)
	$(BIN)/python scripts/man.py man

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
