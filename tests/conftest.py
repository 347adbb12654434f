"""Shared fixtures: one real etcd per test session, a unique key prefix per test.

Tests that break etcd on purpose (kill -9, compaction, TLS, a 3-member cluster) get their own
server from `private_etcd` / `etcd_cluster`, so they never disturb the shared one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from fleetd.registry import EtcdConfig, Registry
from fleetd.sandbox.etcd import EtcdCluster, EtcdServer
from tests.paths import short_dir

# The fault matrix and the fuzzers (5-20 s each; `make test-faults` runs just them, printing
# their FIGURE lines), the end-to-end walkthrough and the dashboard's restart are `slow`: still
# part of `make test` and CI (the whole suite takes about 5 minutes on 2 cores, well inside the
# 15-minute budget); `make test-quick` leaves them out while iterating.
_SLOW_DIRS = ("faults", "fuzz")
_SLOW_TESTS = ("test_walkthrough", "test_fleetd_restart_shows_the_banner_then_recovers")


def pytest_configure(config: pytest.Config) -> None:
    """Tests press Ctrl-C (SIGINT) on the fleetctl they start, as a user at a terminal does. A
    suite started in the background by a shell without job control (`make test &` in a script,
    nohup, some CI runners) inherits SIGINT *ignored*, and so does every fleetctl it starts:
    `journal -f` then never ends on Ctrl-C and those tests time out. Give the session back the
    default disposition (a handled signal is reset to the default in children at exec)."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# A test that needs root says so with one marker, `@pytest.mark.root` (or a module's
# `pytestmark`), optionally naming what root gives it: `@pytest.mark.root("network namespaces")`.
# The one hook below skips them when the suite does not run as root, and the summary says how
# many were skipped and why, so a non-root run never looks like a full pass (CI runs as root).
ROOT_NEEDED_FOR = "namespaced systemd machines"
_ROOT_SKIPPED = pytest.StashKey[dict[str, str]]()  # node id -> the skip reason given to it


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.parts
        if any(d in parts for d in _SLOW_DIRS) or item.name in _SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
    skipped = config.stash.setdefault(_ROOT_SKIPPED, {})
    if os.geteuid() == 0:
        return
    for item in items:
        marker = item.get_closest_marker("root")
        if marker is not None:
            reason = f"needs root: {marker.args[0] if marker.args else ROOT_NEEDED_FOR}"
            item.add_marker(pytest.mark.skip(reason=reason))
            skipped[item.nodeid] = reason


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> Iterator[None]:
    """One line: how many tests were skipped for want of root, and what root would give them.

    Counted from the skip reports (not from the marking), so a test deselected by -k or -m, or
    skipped first for another reason (no sshd, no chromium), is not counted. Written after the
    other summaries (the outermost wrapper), next to the final counts where a reader looks."""
    result = yield
    marked = config.stash.get(_ROOT_SKIPPED, {})
    whys: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = marked.get(report.nodeid)
        if reason is not None and isinstance(report.longrepr, tuple):
            if report.longrepr[2] == f"Skipped: {reason}":
                why = reason.removeprefix("needs root: ")
                whys[why] = whys.get(why, 0) + 1
    count = sum(whys.values())
    if count:
        terminalreporter.write_line(
            f"{count} {'test needs' if count == 1 else 'tests need'} root "
            f"({'; '.join(sorted(whys))}) and {'was' if count == 1 else 'were'} skipped: "
            "run as root, as CI does (.ci/run)",
            yellow=True,
            bold=True,
        )
    return result


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """A real etcd for the whole session (127.0.0.1, free ports, temporary data dir)."""
    server = EtcdServer(tmp_path_factory.mktemp("etcd-session") / "data").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """An etcd of this test's own, for tests that kill, compact or reconfigure it."""
    server = EtcdServer(tmp_path / "etcd").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    """Three etcd members on loopback, for fault tests."""
    cluster = EtcdCluster(tmp_path / "cluster").start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def key_prefix() -> str:
    """A key prefix no other test uses."""
    return f"/test-{uuid.uuid4().hex[:12]}/"


@pytest.fixture
def etcd_config(etcd: EtcdServer, key_prefix: str) -> EtcdConfig:
    return EtcdConfig(endpoints=etcd.endpoints, key_prefix=key_prefix, request_timeout=3.0)


@pytest.fixture
async def registry(etcd_config: EtcdConfig) -> AsyncIterator[Registry]:
    """A connected Registry on the session etcd, under this test's own prefix."""
    async with Registry(etcd_config) as reg:
        yield reg


@pytest.fixture
def short_dirs() -> Iterator[Callable[[], Path]]:
    """Make directories with short paths, for unix sockets (tests/paths.py); removed after."""
    with contextlib.ExitStack() as made:
        yield lambda: made.enter_context(short_dir())


@pytest.fixture
def sock_dir(short_dirs: Callable[[], Path]) -> Path:
    """A directory for this test's unix sockets, with a path short enough for them."""
    return short_dirs()
