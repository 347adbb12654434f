"""fleetctl ssh: the system ssh client's command line, and a real sshd on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import shlex
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleetd.api.server import APIServer
from fleetd.cli.ssh import ssh_argv
from fleetd.model import JobState, UnitState
from fleetd.model import Machine as MachineInfo
from fleetd.registry import Registry
from fleetd.sandbox.machine import Machine
from fleetd.systemd import SystemdManager
from fleetd.unit import UnitFile, UnitOption
from tests.cli.conftest import (
    M1,
    NO_SSHD,
    SSHD,
    SSHD_IP,
    Cluster,
    SSHServer,
    StartSSHD,
    fleetctl_env,
)

needs_sshd = pytest.mark.skipif(
    NO_SSHD, reason=f"{SSHD} or ssh-agent is missing (Debian's openssh-server runs this test)"
)


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        pytest.param(
            {}, ["ssh", "-l", "core", "-p", "22", "-o", "StrictHostKeyChecking=ask", "-o",
                 "UserKnownHostsFile=/k", "-o", "ConnectTimeout=10", "-t", "10.0.0.1"],
            id="interactive-shell",
        ),
        pytest.param(
            {"command": ["echo", "foo"], "forward_agent": True, "strict": False, "port": 2222,
             "tunnel": "bastion:22"},
            ["ssh", "-l", "core", "-p", "2222", "-A", "-o", "StrictHostKeyChecking=no", "-o",
             "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-J", "bastion:22",
             "10.0.0.1", "--", "echo", "foo"],
            id="command-agent-tunnel-no-strict",
        ),
    ],
)  # fmt: skip
def test_ssh_argv(kw: dict, expected: list[str]) -> None:
    args = {"command": [], "user": "core", "port": 22, "forward_agent": False, "strict": True,
            "known_hosts": "/k", "timeout": 10.0, "tunnel": "", **kw}  # fmt: skip
    command = args.pop("command")
    assert ssh_argv("10.0.0.1", command, **args) == expected


async def test_ssh_ambiguous_and_unknown(cluster: Cluster) -> None:
    rc, _, err = await cluster.fleetctl("ssh", "nosuch")
    assert (rc, err) == (1, "Unable to proceed: could not find matching unit or machine\n")
    rc, _, err = await cluster.fleetctl("ssh", "-m", "5ab7", "-u", "hello")
    assert (rc, err) == (1, "Both machine and unit flags provided, please specify only one.\n")


@pytest.mark.skipif(
    NO_SSHD, reason=f"{SSHD} or ssh-agent is missing (Debian's openssh-server runs this test)"
)
async def test_ssh_runs_a_command_on_a_units_machine(cluster: Cluster, sshd) -> None:
    port, env = sshd
    cluster.env["SSH_AUTH_SOCK"] = env["SSH_AUTH_SOCK"]
    common = ("--ssh-username", getpass.getuser(), "--strict-host-key-checking=false")
    rc, out, err = await cluster.fleetctl(
        *common, "ssh", "--ssh-port", str(port), M1[:6], "echo", "foo"
    )
    assert (rc, out) == (0, "foo\n"), err
    assert (await cluster.fleetctl("start", "hello"))[0] == 0  # hello lands on M1
    rc, out, err = await cluster.fleetctl(
        *common, "ssh", "--ssh-port", str(port), "hello", "exit 3"
    )
    assert rc == 3  # ssh's exit status is fleetctl's


# --- status and journal over SSH when the API cannot reach the unit's machine ------------------
A, B = "a" * 32, "b" * 32  # A serves the API (no peer forwarding); B runs the unit, on SSHD_IP
HELLO_OPTIONS = [
    ("Unit", "Description", "Hello World"),
    ("Service", "ExecStart", "/bin/sh -c 'while true; do echo Hello World; sleep 1; done'"),
]


@dataclass
class Remote:
    cluster: Cluster
    server: SSHServer
    manager: SystemdManager
    flags: tuple[str, ...]


@pytest.fixture
async def remote(
    registry: Registry, sshd_factory: StartSSHD, sock_dir: Path, workdir: Path, tmp_path: Path
) -> AsyncIterator[Remote]:
    """Machine B (a real namespaced systemd, public IP SSHD_IP) runs hello.service; the API
    fleetctl talks to is machine A's, which forwards to no peer listener (502
    machineUnreachable). The sshd on SSHD_IP runs each session's command with wrappers first on
    its PATH (a ForceCommand), so its `systemctl`/`journalctl` are B's (nsenter into B's mount
    namespace, B's user manager), as they would be on B itself."""
    async with Machine(f"tssh{os.getpid() % 100000}") as machine:
        config = machine.systemd_config(units_dir=tmp_path / "units")
        async with SystemdManager(config) as manager:
            wrappers = tmp_path / "bin"
            wrappers.mkdir()
            env = machine.env()
            exports = "".join(
                f"export {k}={shlex.quote(env[k])}\n"
                for k in ("XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS")
            )
            for tool, extra in (("systemctl", ["--user"]), ("journalctl", [])):
                path = shutil.which(tool)
                assert path is not None
                argv = machine.command([path, *extra], join_cgroup=False)
                (wrappers / tool).write_text(f'#!/bin/sh\n{exports}exec {shlex.join(argv)} "$@"\n')
                (wrappers / tool).chmod(0o755)
            session = tmp_path / "session.sh"
            session.write_text(
                f'#!/bin/sh\nPATH={wrappers}:$PATH\nexport PATH\nexec /bin/sh -c "$SSH_ORIGINAL_COMMAND"\n'
            )
            session.chmod(0o755)
            server = await sshd_factory(config=f"ForceCommand {session}\n")
            lease_b = await registry.register_machine(MachineInfo(B, SSHD_IP, {}), 30)
            lease_a = await registry.register_machine(MachineInfo(A, "127.0.0.1", {}), 30)
            unit = UnitFile.from_options(UnitOption(s, n, v) for s, n, v in HELLO_OPTIONS)
            await registry.create_job("hello.service", unit, JobState.LAUNCHED)
            assert await registry.schedule("hello.service", B)
            await manager.load("hello.service", unit)
            await manager.start_unit("hello.service")
            await registry.publish_state(
                UnitState("hello.service", B, unit.hash, "loaded", "active", "running"), lease_b
            )
            api = APIServer(registry, A)
            await api.start(sock_dir / "fleet.sock")
            env = {**fleetctl_env(), "SSH_AUTH_SOCK": server.env["SSH_AUTH_SOCK"]}
            flags = ("--ssh-username", getpass.getuser(), "--strict-host-key-checking=false")
            try:
                yield Remote(
                    Cluster(f"unix://{sock_dir}/fleet.sock", registry, workdir, env),
                    server, manager, flags,
                )  # fmt: skip
            finally:
                await api.stop()
                with contextlib.suppress(Exception):
                    await manager.stop_unit("hello.service")
                for lease in (lease_a, lease_b):
                    await lease.revoke()


@needs_sshd
@pytest.mark.root
async def test_status_and_journal_of_a_unit_on_an_unreachable_machine_run_over_ssh(
    remote: Remote,
) -> None:
    cluster, port = remote.cluster, str(remote.server.port)
    rc, out, err = await cluster.fleetctl(*remote.flags, "status", "--ssh-port", port, "hello")
    assert rc == 0, err
    assert out.startswith("● hello.service - Hello World\n"), out  # systemctl status -l, on B
    assert "Active: active (running)" in out

    rc, out, err = await cluster.fleetctl(*remote.flags, "journal", "--ssh-port", port,
                                          "--lines", "2", "hello")  # fmt: skip
    assert rc == 0, err
    assert 1 <= len(out.splitlines()) <= 2 and out.splitlines()[-1].endswith("Hello World")

    # the remote command's exit status is fleetctl's: systemctl status of a dead unit is 3
    await remote.manager.stop_unit("hello.service")
    rc, out, err = await cluster.fleetctl(*remote.flags, "status", "--ssh-port", port, "hello")
    assert rc == 3 and "Active: inactive (dead)" in out, (out, err)

    # --ssh-port is used: nothing listens on port 1, ssh fails (255) and says so
    rc, out, err = await cluster.fleetctl(*remote.flags, "status", "--ssh-port", "1", "hello")
    assert rc == 255 and out == "" and "port 1" in err, err
    # journal's flags make fleet's remote command (--debug shows the ssh command line)
    rc, out, err = await cluster.fleetctl(*remote.flags, "--debug", "journal", "--sudo", "-f",
                                          "--lines", "5", "--ssh-port", "1", "hello")  # fmt: skip
    assert rc == 255 and out == "", err
    assert "'-p', '1'," in err and "'-A'" not in err  # no agent forwarding, as fleet
    assert (
        f"'{SSHD_IP}', '--', 'sudo', 'journalctl', '--unit', 'hello.service', '--no-pager', '-n', '5', '-f']"
        in err
    )


@needs_sshd
@pytest.mark.root
async def test_journal_follow_over_ssh_streams_until_ended(remote: Remote) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleetd.cli", "--endpoint", remote.cluster.endpoint,
        *remote.flags, "journal", "-f", "--lines", "1", "--ssh-port", str(remote.server.port),
        "hello.service",
        env=remote.cluster.env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        seen = 0
        while seen < 3:  # the unit writes a line a second: they arrive as they are written
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, (await proc.wait(), await proc.stderr.read())  # type: ignore[union-attr]
            seen += line.rstrip().endswith(b"Hello World")
    finally:
        proc.terminate()  # fleetctl became ssh (exec): the follow ends with it
        await asyncio.wait_for(proc.wait(), 30)


@needs_sshd
@pytest.mark.root
async def test_status_of_a_global_unit_runs_on_each_of_its_machines(remote: Remote) -> None:
    """A global unit reported by B and by C (C shares B's IP here, so both are the sshd's
    machine): `systemctl status -l` runs on each, a blank line between, as for several units."""
    registry, c = remote.cluster.registry, "c" * 32
    lease_c = await registry.register_machine(MachineInfo(c, SSHD_IP, {}), 30)
    options = [*HELLO_OPTIONS, ("X-Fleet", "Global", "true")]
    unit = UnitFile.from_options(UnitOption(s, n, v) for s, n, v in options)
    await registry.create_job("glob.service", unit, JobState.LAUNCHED)
    await remote.manager.load("glob.service", unit)
    await remote.manager.start_unit("glob.service")
    try:
        for mid in (B, c):
            await registry.publish_state(
                UnitState("glob.service", mid, unit.hash, "loaded", "active", "running"), lease_c
            )
        rc, out, err = await remote.cluster.fleetctl(
            *remote.flags, "status", "--ssh-port", str(remote.server.port), "glob.service"
        )
        assert rc == 0, err
        first, second = out.split("\n\n● ")
        assert first.startswith("● glob.service - Hello World\n") and "active (running)" in first
        assert second.startswith("glob.service - Hello World\n") and "active (running)" in second
    finally:
        await remote.manager.stop_unit("glob.service")
        await lease_c.revoke()


@needs_sshd
@pytest.mark.root
async def test_a_failed_units_journal_is_read_over_ssh_when_the_api_cannot_reach_it(
    remote: Remote,
) -> None:
    """`start` of a unit that failed on a machine the API cannot reach: the failure is told in
    systemd's words, and its journal is asked of that machine with journalctl over SSH (port 22,
    as fleet's status/journal default; nothing listens there in this test, so ssh says so)."""
    registry, unit_hash = remote.cluster.registry, (await remote.cluster.registry.snapshot()).jobs[
        "hello.service"].unit_hash  # fmt: skip
    lease = await registry.grant_lease(30)
    failed = UnitState(
        "hello.service",
        B,
        unit_hash,
        "loaded",
        "failed",
        "failed",
        result="exit-code",
        exit="main process (code=killed, status=9/KILL)",
    )
    await registry.publish_state(failed, lease)
    rc, out, err = await remote.cluster.fleetctl(*remote.flags, "--debug", "start", "hello")
    assert rc == 1, err
    assert out == f"Unit hello.service failed on {B[:8]}.../{SSHD_IP}\n"
    assert (
        "hello.service: systemd reports ActiveState=failed SubState=failed, "
        "Result=exit-code, main process (code=killed, status=9/KILL)\n"
    ) in err
    assert f"'{SSHD_IP}', '--', 'journalctl', '--unit', 'hello.service', '--no-pager', '-n', " \
           "'10']" in err  # fmt: skip
    assert "hello.service: journal unavailable: ssh exited 255: " in err
    await lease.revoke()
