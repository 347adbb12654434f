"""fleetctl ssh: the system ssh client's command line, and a real sshd on loopback."""

from __future__ import annotations

import asyncio
import getpass
import os
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetd.cli.remote import ssh_argv
from tests.cli.conftest import M1, Cluster

SSHD = "/usr/sbin/sshd"
NO_SSHD = not os.path.exists(SSHD) or shutil.which("ssh-agent") is None


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


async def _run(*argv: str, **kw) -> None:
    proc = await asyncio.create_subprocess_exec(*argv, **kw)
    assert await proc.wait() == 0, argv


@pytest.fixture
async def sshd(tmp_path: Path) -> AsyncIterator[tuple[int, dict[str, str]]]:
    """A real sshd on 127.0.0.11 (M1's IP) with generated keys; yields (port, env with an
    ssh-agent holding the user key)."""
    d = tmp_path / "ssh"
    d.mkdir(mode=0o700)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    for key in ("host", "user"):
        await _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key))
    shutil.copy(d / "user.pub", d / "authorized_keys")
    with socket.socket() as probe:
        probe.bind(("127.0.0.11", 0))
        port = probe.getsockname()[1]
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.11\nHostKey {d / 'host'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPidFile {d / 'sshd.pid'}\n"
        "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
    )
    server = await asyncio.create_subprocess_exec(
        SSHD, "-D", "-e", "-f", str(d / "sshd_config"), stderr=asyncio.subprocess.PIPE
    )
    agent = await asyncio.create_subprocess_exec("ssh-agent", "-D", "-a", str(d / "agent"),
                                                 stdout=asyncio.subprocess.PIPE)  # fmt: skip
    try:
        assert server.stderr is not None and agent.stdout is not None
        while True:  # sshd says when it listens
            line = await asyncio.wait_for(server.stderr.readline(), 30)
            assert line, f"sshd exited: {await server.wait()}"
            if b"Server listening" in line:
                break
        await asyncio.wait_for(agent.stdout.readline(), 30)  # the agent prints its socket
        env = {**os.environ, "SSH_AUTH_SOCK": str(d / "agent")}
        await _run("ssh-add", "-q", str(d / "user"), env=env)
        yield port, env
    finally:
        for proc in (server, agent):
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()


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
