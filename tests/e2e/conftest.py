"""A real sandbox per test module: etcd and three namespaced systemd machines, each running a
real fleetd, driven with the real `fleetctl` and `fleetd` entry points as processes: `sandbox`
(the command's own output, and nothing left after `down`), or `cluster` (the fault tests'
harness, tests/faults/harness.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleetd.sandbox.cluster import Sandbox
from tests.faults.harness import cluster as cluster

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("sandbox")
    up = subprocess.run(
        [
            BIN / "fleetd",
            "sandbox",
            "up",
            "--dir",
            directory,
            "--machines",
            "3",
            "--agent-ttl",
            "3s",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    try:
        assert up.returncode == 0, up.stderr
        yield directory, up.stdout
    finally:
        subprocess.run(
            [BIN / "fleetd", "sandbox", "down", "--dir", directory], timeout=120, check=False
        )
        # nothing of the sandbox is left: no process, cgroup or directory
        assert not directory.exists()
        leftovers = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert str(directory) not in leftovers
        tag = Sandbox(directory).tag
        assert not [p for p in Path("/sys/fs/cgroup/systemd").glob(f"fleetd{tag}*")]


def sandbox_env(up_out: str) -> dict[str, str]:
    """The environment `fleetd sandbox up` tells its user to export."""
    export = next(
        line for line in up_out.splitlines() if line.startswith("export FLEETCTL_ENDPOINT=")
    )
    return dict(
        os.environ, PATH=f"{BIN}:{os.environ['PATH']}", FLEETCTL_ENDPOINT=export.split("=", 1)[1]
    )
