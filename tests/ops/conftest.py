"""Operating fleetd: the units in contrib/systemd under a real systemd, the wheel in a fresh venv.

Tests marked `root` need namespaced `systemd --user` machines (mount namespaces, cgroups).
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(
        reason="needs root: namespaced systemd --user machines (mount namespaces, cgroups)"
    )
    for item in items:
        if "tests/ops/" in str(item.path) and "root" in item.keywords:
            item.add_marker(skip)
