"""fleetctl --tunnel HOST[:PORT]: the API reached through a real sshd, with the system ssh."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fleetd.api.server import APIServer, TLSFiles
from fleetd.cli.context import Settings
from fleetd.cli.tunnel import remote_target, split_host_port, tunnel_argv
from fleetd.sandbox.pki import make_pki
from tests.cli.conftest import M1, NO_SSHD, SSHD, SSHD_IP, Cluster, StartSSHD

needs_sshd = pytest.mark.skipif(
    NO_SSHD, reason=f"{SSHD} or ssh-agent is missing (Debian's openssh-server runs this test)"
)


def test_fleetctl_loads_no_tunnel_code_without_tunnel() -> None:
    code = (
        "import sys, fleetd.cli; from fleetd.cli import main; main(['--endpoint', 'unix:///x',"
        " 'list-machines'])\n"
        "loaded = [m for m in sys.modules if m in ('fleetd.cli.tunnel', 'ctypes', 'subprocess')]\n"
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, capture_output=True)


@pytest.mark.parametrize(
    ("endpoint", "target"),
    [
        ("unix:///var/run/fleet.sock", "/var/run/fleet.sock"),
        ("http://10.0.0.1:49153", "10.0.0.1:49153"),
        ("https://fleet.example", "fleet.example:443"),
        ("http://[fd00::1]:8080,http://other:1", "[fd00::1]:8080"),
    ],
)
def test_remote_target(endpoint: str, target: str) -> None:
    assert remote_target(endpoint) == target


@pytest.mark.parametrize(
    ("address", "expected"),
    [("bastion", ("bastion", 22)), ("bastion:2222", ("bastion", 2222)),
     ("[fd00::1]:2222", ("fd00::1", 2222)), ("fd00::1", ("fd00::1", 22))],
)  # fmt: skip
def test_split_host_port(address: str, expected: tuple[str, int]) -> None:
    assert split_host_port(address) == expected


def test_tunnel_argv() -> None:
    opts = Settings(tunnel="bastion:2222", ssh_username="core", strict_host_key_checking=False)
    assert tunnel_argv(opts, "/tmp/t/api.sock", "/var/run/fleet.sock") == [
        "ssh", "-l", "core", "-p", "2222", "-A", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-N",
        "-o", "ExitOnForwardFailure=yes", "-o", "ControlPath=none", "-o", "PermitLocalCommand=yes",
        "-o", "LocalCommand=echo fleetctl-tunnel-ready",
        "-L", "/tmp/t/api.sock:/var/run/fleet.sock", "bastion",
    ]  # fmt: skip


@needs_sshd
@pytest.mark.root("a mount namespace")
async def test_tunnel_lists_units_of_a_cluster_reached_only_through_sshd(
    cluster: Cluster, sshd_factory: StartSSHD, short_dirs: Callable[[], Path]
) -> None:
    # The API's socket directory is mounted on `remote` only in the sshd's mount namespace:
    # here `remote` is an empty directory, so the endpoint exists only on the other side.
    remote = short_dirs()
    sock_dir = Path(cluster.endpoint.removeprefix("unix://")).parent
    server = await sshd_factory(binds=[(sock_dir, remote)])
    assert (await cluster.fleetctl("start", "hello"))[0] == 0
    endpoint = f"unix://{remote}/fleet.sock"

    rc, out, err = await cluster.fleetctl("--endpoint", endpoint, "list-units")
    assert rc == 1 and f"{remote}/fleet.sock" in err, (out, err)  # not reachable from here

    tmp = short_dirs()  # where fleetctl makes the tunnel's private directory
    cluster.env.update(SSH_AUTH_SOCK=server.env["SSH_AUTH_SOCK"], TMPDIR=str(tmp))
    tunnel = ("--tunnel", f"{SSHD_IP}:{server.port}", "--ssh-username", getpass.getuser(),
              "--strict-host-key-checking=false")  # fmt: skip
    rc, out, err = await cluster.fleetctl("--endpoint", endpoint, *tunnel, "list-units")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split("\t")[0] == "UNIT"
    assert lines[1].split("\t")[:3] == ["hello.service", "5ab7f3b4.../127.0.0.11", "active"]
    assert os.listdir(tmp) == []  # the tunnel's socket directory went with its ssh

    # a command that writes goes through too; the endpoint's form is the remote side's
    rc, out, err = await cluster.fleetctl("--endpoint", endpoint, *tunnel, "stop", "hello")
    assert (rc, out) == (0, "Unit hello.service loaded on 5ab7f3b4.../127.0.0.11\n"), err
    assert os.listdir(tmp) == []


@needs_sshd
async def test_tunnel_that_cannot_be_opened_says_so(cluster: Cluster, tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    cluster.env["TMPDIR"] = str(tmp)
    rc, out, err = await cluster.fleetctl(
        "--tunnel", f"{SSHD_IP}:1", "--strict-host-key-checking=false", "list-units"
    )
    assert rc == 1 and out == ""
    assert err.splitlines()[-1] == (
        f"failed initializing SSH tunnel through {SSHD_IP}:1: ssh exited with status 255"
    )
    assert os.listdir(tmp) == []  # nothing left behind
    rc, _, err = await cluster.fleetctl("--tunnel", "bastion:http", "list-units")
    assert (rc, err) == (1, "--tunnel 'bastion:http': invalid port 'http' (expected HOST[:PORT])\n")


@needs_sshd
async def test_tunnel_to_an_https_endpoint_keeps_tls_end_to_end(
    cluster: Cluster, sshd_factory: StartSSHD, tmp_path: Path
) -> None:
    """The tunnel forwards to the endpoint's host:port; TLS runs through it, verified under
    the endpoint's name with fleetctl's client certificate (the TCP API requires one)."""
    pki = make_pki(tmp_path / "pki", clients=("fleetctl",))
    api = APIServer(cluster.registry, M1)
    await api.start(tcp=("127.0.0.1", 0), tls=TLSFiles(str(pki.server_cert),
                    str(pki.server_key), str(pki.ca)))  # fmt: skip
    assert api.tcp_address is not None
    server = await sshd_factory()
    cluster.env["SSH_AUTH_SOCK"] = server.env["SSH_AUTH_SOCK"]
    cert, key = pki.client("fleetctl")
    try:
        rc, out, err = await cluster.fleetctl(
            "--endpoint", f"https://localhost:{api.tcp_address[1]}", "--ca-file", str(pki.ca),
            "--cert-file", str(cert), "--key-file", str(key),
            "--tunnel", f"{SSHD_IP}:{server.port}", "--ssh-username", getpass.getuser(),
            "--strict-host-key-checking=false", "list-machines", "--no-legend",
        )  # fmt: skip
    finally:
        await api.stop()
    assert rc == 0, err
    assert [line.split("\t")[1] for line in out.splitlines()] == [
        "127.0.0.11", "127.0.0.13", "127.0.0.12"]  # sorted by machine ID  # fmt: skip
