"""Fixtures: real namespaced `systemd --user` machines (root only) and adapters against them."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from fleetd.sandbox.machine import Machine
from fleetd.systemd import SystemdManager


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def machine(request: pytest.FixtureRequest) -> AsyncIterator[Machine]:
    """One machine for the whole module (starting one costs ~0.2 s, but tests share it)."""
    name = "t" + "".join(c for c in request.module.__name__.rsplit(".", 1)[-1] if c.isalnum())
    async with Machine(f"{name[:20]}{os.getpid() % 100000}") as m:
        yield m


@pytest_asyncio.fixture(loop_scope="module")
async def manager(machine: Machine, tmp_path: Path) -> AsyncIterator[SystemdManager]:
    """An adapter with its own units dir, on the module's machine."""
    async with SystemdManager(machine.systemd_config(units_dir=tmp_path / "units")) as mgr:
        yield mgr
