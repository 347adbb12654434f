"""`fleetd sandbox add`: one more machine joined to a running sandbox, as its users run it.

The sandbox is brought up with one machine by the real `fleetd sandbox up`; `add` joins a
second one that runs another fleetd program (`--fleetd`: here this venv's `fleetd` console
script rather than `python -m fleetd.main`), with its own systemd, the sandbox's etcd and a
certificate of the sandbox's peer CA: fleetctl on the first machine lists it, places a unit on
it and shows that unit's status, which the first machine's fleetd asks of the second over the
peers' mutual TLS. Bad input is refused before anything starts and changes nothing.
The systemd-sysext image's test (test_sysext.py) adds a machine made from a mount namespace
where the image is merged (`--mount-namespace`).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import BIN, Cluster, logs_on_failure, sandbox_up

pytestmark = [
    pytest.mark.root("a sandbox: namespaced systemd machines"),
    pytest.mark.timeout(180),
]

SLEEPER = """\
[Unit]
Description=runs on the added machine

[Service]
ExecStart=/bin/sleep infinity

[X-Fleet]
MachineMetadata=role=extra
"""


@pytest.fixture(scope="module")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("add")
    with sandbox_up(directory, machines=1, keep_logs=logs_on_failure(request, tmp_path_factory)):
        yield Cluster(directory, agent_ttl=3.0)


def add(cluster: Cluster, *args: str) -> tuple[int, str, str]:
    """`fleetd sandbox add ARGS` on the cluster: its exit status, stdout and stderr."""
    done = subprocess.run(
        [BIN / "fleetd", "sandbox", "add", "--dir", str(cluster.dir), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize(
    ("args", "error"),
    [
        # the program is started by path inside the machine: a relative one means nothing there
        (["--fleetd", "fleetd"], "--fleetd fleetd: an absolute path, please"),
        (["--fleetd", "/nonexistent/fleetd"], "--fleetd /nonexistent/fleetd: no executable file there"),
        # a directory is no program
        (["--fleetd", "/usr/bin"], "--fleetd /usr/bin: no executable file there"),
        (["--mount-namespace", "/tmp"], "--mount-namespace /tmp: not a mount namespace to enter"),
        (["--metadata", "role"], "--metadata 'role': "),
    ],
    ids=["relative-program", "no-program", "directory", "not-a-namespace", "bad-metadata"],
)
def test_bad_input_is_refused_before_anything_starts(
    cluster: Cluster, args: list[str], error: str
) -> None:
    before = (cluster.dir / "sandbox.json").read_bytes(), sorted(cluster.dir.iterdir())
    rc, out, err = add(cluster, *args)
    assert (rc, out) == (1, ""), err
    assert err.startswith(f"Error: {error}"), err
    assert ((cluster.dir / "sandbox.json").read_bytes(), sorted(cluster.dir.iterdir())) == before


def test_an_added_machine_runs_the_given_fleetd_and_takes_units(cluster: Cluster) -> None:
    program = BIN / "fleetd"
    rc, out, err = add(cluster, "--fleetd", str(program), "--metadata", "role=extra")
    assert rc == 0, err
    added = cluster.machine("m2")
    assert out == f"m2 ({added.legend}): add done\n"
    assert (added.ip, added.metadata, added.fleetd) == ("127.0.0.12", {"role": "extra"}, str(program))
    # the machine's fleetd is that program (a console script: the interpreter, then the script)
    cmdline = Path(f"/proc/{added.fleetd_pid}/cmdline").read_bytes().split(b"\0")
    assert str(program).encode() in cmdline[:2], cmdline
    status = cluster.sandbox_command("status").stdout
    assert f"m2\t{added.id}\t127.0.0.12\trole=extra\tmachine up\tfleetd running ({program})" in status

    machines = cluster.fleetctl("m1", "list-machines", "--full", "--no-legend").stdout
    assert f"{added.id}\t127.0.0.12\trole=extra" in machines, machines
    cluster.write_unit("sleeper.service", SLEEPER)
    cluster.fleetctl("m1", "start", "sleeper.service")
    assert cluster.unit_process("m2", "sleeper.service").active == "active"
    # m1's fleetd asks m2's for the status, over the peers' mutual TLS: m2's certificate is of
    # the sandbox's peer CA, signed when it was added
    shown = cluster.fleetctl("m1", "status", "sleeper.service").stdout
    assert "Active: active (running)" in shown, shown

    # a restart of its fleetd starts the same program again
    first = added.fleetd_pid
    cluster.sandbox_command("restart", "m2")
    again = cluster.machine("m2")
    assert again.fleetd_pid != first
    cmdline = Path(f"/proc/{again.fleetd_pid}/cmdline").read_bytes().split(b"\0")
    assert str(program).encode() in cmdline[:2], cmdline
