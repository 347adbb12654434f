"""Package fixtures: a real 3-machine sandbox, `fleetctl dashboard` as a process, and headless
Chromium, shared by the browser tests (which run in order)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.dashboard.harness import Cluster, DashboardProcess, sandbox
from tests.dashboard.webdriver import Browser


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with sandbox(tmp_path_factory.mktemp("sandbox"), tmp_path_factory.mktemp("units")) as c:
        yield c


@pytest.fixture(scope="package")
def dashboard(cluster: Cluster) -> Iterator[DashboardProcess]:
    dash = DashboardProcess(cluster.env)
    try:
        yield dash
    finally:
        dash.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    with Browser() as b:
        yield b
