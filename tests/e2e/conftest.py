"""A real sandbox per test module: etcd and three namespaced systemd machines, each running a
real fleetd, driven with the real `fleetctl` and `fleetd` entry points as processes: `sandbox`
(the command's own output, and nothing left after `down`), or `cluster` (the fault tests'
harness, tests/faults/harness.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetd.sandbox.cluster import Sandbox
from tests.faults.harness import cluster as cluster
from tests.faults.harness import logs_on_failure, sandbox_up


@pytest.fixture(scope="module")
def sandbox(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, str]]:
    """The sandbox's directory and what `fleetd sandbox up` printed; after `down`, nothing of
    it is left: no process, cgroup or directory (its logs are kept when a test failed)."""
    directory = tmp_path_factory.mktemp("sandbox")
    with sandbox_up(directory, keep_logs=logs_on_failure(request, tmp_path_factory)) as up_out:
        yield directory, up_out
    assert not directory.exists()
    leftovers = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(directory) not in leftovers
    tag = Sandbox(directory).tag
    assert not [p for p in Path("/sys/fs/cgroup/systemd").glob(f"fleetd{tag}*")]
