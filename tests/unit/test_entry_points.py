"""The installed console scripts, run as a user runs them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fleetd import __version__

BIN = Path(sys.executable).parent


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize(
    "argv",
    [
        ["fleetctl", "version"],
        ["fleetctl", "--version"],
        ["fleetctl", "vers"],  # unique prefixes work, as in fleet
        ["fleetd", "ctl", "version"],
    ],
)
def test_fleetctl_version(argv: list[str]) -> None:
    result = run(str(BIN / argv[0]), *argv[1:])
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"fleetctl version {__version__}\n"


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["help"], []])
def test_fleetctl_help_shows_version(argv: list[str]) -> None:
    result = run(str(BIN / "fleetctl"), *argv)
    assert result.returncode == 0, result.stderr
    assert __version__ in result.stdout
    assert "version" in result.stdout


def test_fleetd_version() -> None:
    result = run(str(BIN / "fleetd"), "--version")
    assert result.returncode == 0
    assert result.stdout == f"fleetd version {__version__}\n"


def test_unknown_command_fails_on_stderr() -> None:
    result = run(str(BIN / "fleetctl"), "no-such-command")
    assert result.returncode != 0
    assert "no-such-command" in result.stderr
    assert result.stdout == ""


def test_demo_has_a_usage() -> None:
    # the demo itself (a 3-machine sandbox) runs in tests/e2e/test_walkthrough.py
    result = run(sys.executable, "-m", "fleetd.demo", "--help")
    assert result.returncode == 0, result.stderr
    assert "--keep" in result.stdout


def test_scripts_are_installed() -> None:
    assert shutil.which("fleetctl", path=str(BIN))
    assert shutil.which("fleetd", path=str(BIN))
