"""fleetctl ssh: the system ssh client's command line, and a real sshd on loopback."""

from __future__ import annotations

import getpass

import pytest

from fleetd.cli.remote import ssh_argv
from tests.cli.conftest import M1, NO_SSHD, SSHD, Cluster


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
