"""fleetd's Debian package, built by `make deb`'s script and used as an operator would.

The package is built from a copy of the source tree with Debian's own tooling
(scripts/build-deb.sh: sdist, wheel, dpkg-buildpackage over debian/), then installed with `apt-get
install ./fleetd_*.deb` into a throw-away copy of this host booted by a real `systemd --system`
(tests/ops/system_root.py: an overlay of the host's root in its own namespaces; the host's /usr,
/etc and package database are never written). etcd runs in that root's network namespace, where
127.0.0.1:2379 is fleet.conf's default. Then, as the package ships it, nothing adapted:
`systemctl start fleet` returns with fleetd serving (Type=notify), a member of the `fleet` group
uses fleetctl and another user is refused by the socket's permissions, a unit runs through the
cluster, and `apt-get purge` stops it, takes the machine out of the cluster and leaves the
root's files exactly as they were before the install.

The build needs dpkg-dev, debhelper and python3.11-venv (scripts/install-system-deps.sh installs
them as root) and the wheelhouse of `make setup`; nothing is downloaded.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetd import __version__
from fleetd.config import OPTIONS, Config, build_config, parse_config_file
from fleetd.sandbox.etcd import etcd_binary, etcdctl_binary
from fleetd.sandbox.notify import NotifySocket
from tests.ops.system_root import SystemRoot
from tests.paths import short_dir

REPO = Path(__file__).parents[2]
WHEELHOUSE = Path(sys.prefix) / "wheelhouse"  # the suite's venv's: `make setup` fills it
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.pyc", "*.egg-info", "build", "dist", ".pytest_cache",
    ".hypothesis", ".ruff_cache", ".import_linter_cache", "man",
)  # fmt: skip
DEADLINE = 60.0  # a bound against hanging, never an expectation of speed
ARCH = subprocess.run(
    ["dpkg", "--print-architecture"], capture_output=True, text=True, check=False
).stdout.strip()
DEB = f"fleetd_{__version__}_{ARCH}.deb"

# What the package installs, besides the virtual environment under /usr/lib/fleetd.
INSTALLED = (
    "/usr/bin/fleetd", "/usr/bin/fleetctl",
    "/usr/lib/systemd/system/fleet.service", "/usr/lib/systemd/system/fleet.socket",
    "/usr/lib/sysusers.d/fleetd.conf", "/usr/lib/tmpfiles.d/fleetd.conf",
    "/usr/share/man/man1/fleetctl.1.gz", "/usr/share/man/man8/fleetd.8.gz",
    "/usr/share/bash-completion/completions/fleetctl",
    "/usr/share/zsh/vendor-completions/_fleetctl",
    "/usr/share/fish/vendor_completions.d/fleetctl.fish",
    "/etc/fleet/fleet.conf", "/usr/share/doc/fleetd/copyright",
)  # fmt: skip
# Where the file lists before the install and after the purge are compared: the trees a package
# and its maintainer scripts may write (and every top-level name), less what changes without
# the package having a say: logs (journal, apt, dpkg), caches (apt's, man-db's index), apt's
# and dpkg's own records (their files stay; fleetd's entries in them go, checked apart), the
# transaction log of PackageKit (apt's hook tells it of every run), systemd's records of the
# services running (D-Bus, polkit, PackageKit: apt woke them) and their log streams, and the
# root's own mounts.
COMPARED = ("/etc", "/usr", "/var", "/opt", "/srv", "/run", "/root", "/home", "/boot")
VOLATILE = (
    "/var/log", "/var/cache", "/var/lib/apt", "/var/lib/PackageKit", "/run/systemd/units",
    "/run/systemd/journal", "/run/host",
)  # fmt: skip

SLEEPER = """\
[Unit]
Description=runs until its machine leaves the cluster

[Service]
ExecStart=/bin/sleep infinity
"""

COMPLETE_LI = (
    "source /usr/share/bash-completion/completions/fleetctl; COMP_WORDS=(fleetctl li); "
    'COMP_CWORD=1; _fleetctl_completion fleetctl; echo "${COMPREPLY[@]}"'
)

debian_tooling = pytest.mark.skipif(
    not (shutil.which("dpkg-buildpackage") and shutil.which("dh")),
    reason="dpkg-dev and debhelper are not installed (scripts/install-system-deps.sh installs "
    "them as root)",
)


# -- the configuration file and the version: quick, no build -------------------------------


def fleet_conf() -> str:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import fleet_conf  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(REPO / "scripts"))
    return str(fleet_conf.fleet_conf())


def test_fleet_conf_shows_every_option_commented_out_with_its_default() -> None:
    text = fleet_conf()
    assert parse_config_file(text) == {}  # as installed, it sets nothing
    shown = dict(re.findall(r"^#([a-z_]+)=(.*)$", text, re.MULTILINE))
    assert set(shown) == {o.name for o in OPTIONS if not o.deprecated}
    # each line uncommented as it is gives the defaults
    uncommented = re.sub(r"^#([a-z_]+=)", r"\1", text, flags=re.MULTILINE)
    assert build_config(parse_config_file(uncommented)) == Config()


def test_debian_changelog_names_this_version() -> None:
    done = subprocess.run(
        ["dpkg-parsechangelog", "--show-field", "Version"], cwd=REPO, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0 and not shutil.which("dpkg-parsechangelog"):
        pytest.skip("dpkg-dev is not installed (scripts/install-system-deps.sh)")
    assert done.stdout.strip() == __version__, "add a debian/changelog entry for this version"


# -- the package: built once, then installed for real --------------------------------------


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package, built by scripts/build-deb.sh from a copy of the source tree."""
    if not any(WHEELHOUSE.glob("*.whl")):
        pytest.fail(f"no wheels in {WHEELHOUSE}: run make setup")
    work = tmp_path_factory.mktemp("deb")
    source = work / "source"
    shutil.copytree(REPO, source, ignore=NOT_COPIED)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PYTHON=sys.executable, WHEELHOUSE=str(WHEELHOUSE))
    done = subprocess.run(
        [source / "scripts" / "build-deb.sh", work / "out", work / "build"], cwd=work,
        capture_output=True, text=True, timeout=300, check=False, env=env,
    )  # fmt: skip
    log = work / "build" / "build.log"
    assert done.returncode == 0, f"{done.stderr}\n{log.read_text()[-3000:] if log.exists() else ''}"
    return work / "out" / DEB


def dpkg_deb(*args: str | Path) -> str:
    return subprocess.run(
        ["dpkg-deb", *map(str, args)], capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
@debian_tooling
def test_make_deb_builds_a_package_holding_what_a_host_needs(deb: Path) -> None:
    control = dpkg_deb("--field", deb)
    assert f"Version: {__version__}\n" in control and f"Architecture: {ARCH}\n" in control
    depends = re.search(r"^Depends: (.*)$", control, re.MULTILINE)
    assert depends is not None and "python3.11" in depends[1] and "systemd" in depends[1]
    listing = dpkg_deb("--contents", deb)
    paths = {line.split()[5].removeprefix(".").split(" -> ")[0] for line in listing.splitlines()}
    for path in INSTALLED:
        assert path in paths, f"the package lacks {path}"
    # the locked runtime and the tls extra, and no test or build tool, in the environment
    site = "/usr/lib/fleetd/lib/python3.11/site-packages/"
    dists = {p[len(site):].split("-")[0].lower() for p in paths if p.startswith(site)
             and p.endswith(".dist-info/")}  # fmt: skip
    assert {"fleetd", "aiohttp", "etcd3aio", "dbus_fast", "cryptography"} <= dists
    assert not dists & {"pytest", "hypothesis", "ruff", "pip", "setuptools", "build"}
    assert re.search(r"^-rw------- root/root .* \./etc/fleet/fleet\.conf$", listing, re.M)


@pytest.fixture
def root() -> Iterator[SystemRoot]:
    with short_dir("fdeb") as directory, SystemRoot(directory) as booted:
        yield booted


@pytest.fixture
def etcd(root: SystemRoot) -> Iterator[int]:
    """etcd on 127.0.0.1:2379 of the root's network namespace (fleet.conf's default endpoint),
    run from the host's side: it writes nothing into the root. Its PID."""
    data = root.dir / "etcd"
    with (
        NotifySocket(root.dir / "etcd.notify") as notify,
        (root.dir / "etcd.log").open("wb") as log,
    ):
        proc = subprocess.Popen(
            ["nsenter", f"--net=/proc/{root.pid}/ns/net", "--", str(etcd_binary()),
             f"--data-dir={data}", "--listen-client-urls=http://127.0.0.1:2379",
             "--advertise-client-urls=http://127.0.0.1:2379",
             "--listen-peer-urls=http://127.0.0.1:2380", "--log-level=warn", "--unsafe-no-fsync"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "NOTIFY_SOCKET": str(notify.path)},
        )  # fmt: skip
        try:
            notify.wait_ready(DEADLINE, proc.pid)
            yield proc.pid
        finally:
            proc.kill()
            proc.wait(DEADLINE)


def fleet_keys(root: SystemRoot, kind: str) -> list[str]:
    """The keys of one kind under fleet.conf's default prefix, read from the root's etcd."""
    done = subprocess.run(
        ["nsenter", f"--net=/proc/{root.pid}/ns/net", "--", str(etcdctl_binary()),
         "--endpoints=http://127.0.0.1:2379", "get", "--prefix", "--keys-only", f"/fleet/{kind}/"],
        capture_output=True, text=True, timeout=DEADLINE, check=True,
    )  # fmt: skip
    return done.stdout.split()


def systemctl_show(root: SystemRoot, unit: str, *props: str) -> dict[str, str]:
    out = root.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.mark.slow
@pytest.mark.root("a real systemd --system in namespaces over an overlay of the host's root")
@pytest.mark.timeout(300)
@debian_tooling
def test_apt_install_start_use_and_purge_under_a_real_systemd(
    deb: Path, root: SystemRoot, etcd: int
) -> None:
    root.run(["useradd", "--no-create-home", "alice"])
    root.run(["useradd", "--no-create-home", "bob"])
    shutil.copy(deb, root.path("/tmp"))
    root.path("/tmp/sleeper.service").write_text(SLEEPER)
    before = root.files_under(COMPARED, VOLATILE)

    apt = {"DEBIAN_FRONTEND": "noninteractive"}
    root.run(["apt-get", "install", "--yes", "--no-install-recommends", f"/tmp/{deb.name}"],
             env=apt)  # fmt: skip
    for path in INSTALLED:
        assert root.path(path).exists(), f"{path} not installed"
    assert (root.path("/etc/fleet/fleet.conf").stat().st_mode & 0o777) == 0o600
    conffiles = root.run(["dpkg-query", "--showformat=${Conffiles}", "--show", "fleetd"]).stdout
    assert "/etc/fleet/fleet.conf" in conffiles
    group = root.run(["getent", "group", "fleet"]).stdout.split(":")
    assert int(group[2]) < 1000, f"fleet is not a system group: {group}"
    # installed, neither enabled nor started: the configuration comes first
    state = systemctl_show(root, "fleet.service", "UnitFileState", "ActiveState", "Type")
    assert state == {"UnitFileState": "disabled", "ActiveState": "inactive", "Type": "notify"}
    assert root.run(["fleetd", "--version"]).stdout.strip().endswith(__version__)
    assert root.run(["man", "--where", "8", "fleetd"]).stdout.strip().endswith("fleetd.8.gz")
    # bash completes through the installed script (which asks fleetctl itself)
    completed = root.run(["bash", "-c", COMPLETE_LI]).stdout.split()
    assert completed == ["list-machines", "list-unit-files", "list-units"], completed

    root.run(["systemctl", "enable", "fleet.socket", "fleet.service"])
    root.run(["systemctl", "start", "fleet"], timeout=DEADLINE)
    # start returned: fleetd said READY=1, which it says once its API listens and this machine
    # is registered, with the status it serves under
    state = systemctl_show(root, "fleet.service", "ActiveState", "SubState", "StatusText")
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
    assert state["StatusText"].startswith(f"serving: machine {root.machine_id[:8]}"), state
    assert fleet_keys(root, "machine") == [f"/fleet/machine/{root.machine_id}"]
    socket = systemctl_show(root, "fleet.socket", "ActiveState", "SocketGroup", "SocketMode")
    assert socket == {"ActiveState": "active", "SocketGroup": "fleet", "SocketMode": "0660"}

    root.run(["usermod", "--append", "--groups", "fleet", "alice"])
    machines = root.run(["fleetctl", "list-machines", "--full"], user="alice").stdout
    assert root.machine_id in machines, machines
    refused = root.run(["fleetctl", "list-machines"], user="bob", check=False)
    assert refused.returncode != 0 and "permission denied" in refused.stderr.lower(), refused
    assert refused.stdout == ""

    root.run(["fleetctl", "start", "/tmp/sleeper.service"], user="alice", timeout=DEADLINE)
    sleeper = systemctl_show(root, "sleeper.service", "ActiveState", "MainPID")
    assert sleeper["ActiveState"] == "active", sleeper
    fleetd_pid = systemctl_show(root, "fleet.service", "MainPID")["MainPID"]

    # an upgrade (the same version again) restarts fleetd, which adopts the running unit; the
    # socket keeps listening
    root.run(["dpkg", "--install", f"/tmp/{deb.name}"], env=apt, timeout=DEADLINE)
    state = systemctl_show(root, "fleet.service", "ActiveState", "MainPID")
    assert state["ActiveState"] == "active" and state["MainPID"] != fleetd_pid, state
    assert systemctl_show(root, "sleeper.service", "ActiveState", "MainPID") == sleeper
    assert systemctl_show(root, "fleet.socket", "ActiveState")["ActiveState"] == "active"
    listed = root.run(["fleetctl", "list-units", "--no-legend"], user="alice").stdout
    assert listed.split()[:4] == ["sleeper.service", f"{root.machine_id[:8]}...", "active",
                                  "running"], listed  # fmt: skip

    purged = root.run(["apt-get", "purge", "--yes", "fleetd"], env=apt, timeout=DEADLINE * 2)
    # the machine left the cluster before fleetd stopped (its lease revoked: no key waits for
    # the TTL), and its unit stopped here
    assert "leaves the cluster" in purged.stdout, purged.stdout  # apt shows scripts' stderr
    assert fleet_keys(root, "machine") == [] and fleet_keys(root, "state") == []
    for unit in ("sleeper.service", "fleet.service", "fleet.socket"):
        assert systemctl_show(root, unit, "ActiveState")["ActiveState"] == "inactive", unit
    assert root.run(["getent", "group", "fleet"], check=False).returncode == 2
    status = root.run(["dpkg-query", "--show", "fleetd"], check=False)
    assert status.returncode != 0 or status.stdout.strip() == "fleetd", status
    after = root.files_under(COMPARED, VOLATILE)
    assert after == before, (
        f"left behind: {sorted(after - before)}; removed: {sorted(before - after)}"
    )
