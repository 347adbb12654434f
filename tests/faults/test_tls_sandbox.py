"""`fleetd sandbox up --tls`: etcd over TLS with client certificates and auth, end to end.

The real `fleetd sandbox up --tls` entry point brings up etcd (https only, `--client-cert-auth`,
auth on) and two machines whose fleetds reach it with their own certificate and the `fleet`
user; the real `fleetctl` starts a unit through them. Then the protection is shown to be real
(plain http, no certificate, no or a wrong password, a key outside the `fleet` user's prefix are
all refused) and no secret shows in a log file or in `ps`. `fleetd sandbox down` leaves nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import stat
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from fleetd.config import parse_config_file
from fleetd.registry import (
    EtcdAuthError,
    EtcdConfig,
    EtcdTLSError,
    EtcdUnavailable,
    Registry,
)
from fleetd.sandbox.cluster import Sandbox
from fleetd.sandbox.etcd import etcdctl_binary
from tests.faults.harness import BIN, COMMAND_TIMEOUT, Cluster, report

pytestmark = pytest.mark.root

AGENT_TTL = 3.0
UNIT = "hello.service"


def sandbox(command: str, directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / "fleetd", "sandbox", command, "--dir", str(directory), *args],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def test_tls_sandbox_runs_units_and_refuses_every_other_client(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    directory = tmp_path_factory.mktemp("tls")
    tag = Sandbox(directory).tag
    started = time.monotonic()
    try:
        up = sandbox("up", directory, "--tls", "--machines", "2", "--agent-ttl", f"{AGENT_TTL:g}s")
        assert up.returncode == 0, up.stderr
        up_took = time.monotonic() - started
        cluster = Cluster(directory, AGENT_TTL)
        cluster.write_unit(UNIT)
        cluster.fleetctl("m1", "start", UNIT)  # returns once the unit is active
        running_after = time.monotonic() - started

        units = cluster.fleetctl("m1", "list-units", "--no-legend").stdout.split()
        assert units[0] == UNIT and units[2:4] == ["active", "running"], units
        machines = cluster.fleetctl("m2", "list-machines", "--no-legend").stdout.splitlines()
        assert len(machines) == 2, machines

        # the sandbox's other commands work on a TLS sandbox: restart waits until m2's new
        # fleetd has joined (through the sandbox's own TLS + auth registry connection)
        restart = sandbox("restart", directory, "m2")
        assert restart.returncode == 0, restart.stderr
        inside = sandbox("exec", directory, "m2", "--", "fleetctl", "list-machines", "--no-legend")
        assert inside.returncode == 0 and len(inside.stdout.splitlines()) == 2, inside

        status = sandbox("status", directory).stdout
        state = cluster.state
        assert f"etcd\thttps://127.0.0.1:{state.etcd_port}\trunning" in status, status

        secrets = _secrets(Path(state.pki_dir))
        _check_files_are_private(Path(state.pki_dir))
        with pytest.raises(OSError):  # etcd drops a plain http connection without an answer
            urllib.request.urlopen(f"http://127.0.0.1:{state.etcd_port}/health", timeout=3.0)
        asyncio.run(_check_refusals(cluster.sandbox.etcd_config(request_timeout=3.0)))
        _check_prefix_confinement(cluster, secrets)
        shown = _check_no_secret_shown(cluster, secrets, up)
        report(
            "sandbox up --tls (2 machines)",
            f"up {up_took:.1f} s; {UNIT} active {running_after:.1f} s after `sandbox up --tls`; "
            f"5 kinds of client refused; 0 secrets in {shown}",
        )
    finally:
        down = sandbox("down", directory)
    assert down.returncode == 0, down.stderr
    assert not directory.exists()
    leftovers = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(directory) not in leftovers
    assert not list(Path("/sys/fs/cgroup/systemd").glob(f"fleetd{tag}*"))


def _secrets(pki: Path) -> dict[str, str]:
    fleet = parse_config_file((pki / "fleet.conf").read_text())
    return {
        "fleet": fleet["etcd_password"],
        "root": (pki / "root.password").read_text().strip(),
    }


def _check_files_are_private(pki: Path) -> None:
    assert stat.S_IMODE(pki.stat().st_mode) == 0o700
    private = sorted(p.name for p in pki.iterdir() if stat.S_IMODE(p.stat().st_mode) == 0o600)
    assert private == [
        "fleet.conf",
        "m1-key.pem",
        "m2-key.pem",
        "root.password",
        "sandbox-key.pem",
        "server-key.pem",
    ]


async def _check_refusals(good: EtcdConfig) -> None:
    """The sandbox's own settings work; take away one piece and etcd refuses."""
    async with Registry(good) as registry:
        assert UNIT in (await registry.snapshot()).jobs

    # plain http: etcd serves TLS only
    plain = EtcdConfig(endpoints=good.endpoints, request_timeout=3.0)
    with pytest.raises(EtcdUnavailable):
        await Registry(plain).connect()

    # the CA and the password, but no client certificate: the TLS handshake fails
    no_cert = dataclasses.replace(good, cert_file=None, key_file=None)
    with pytest.raises(EtcdTLSError, match="no client certificate was presented"):
        await Registry(no_cert).connect()

    # a certificate but no password: its CN is no etcd user, so nothing is permitted
    no_password = dataclasses.replace(good, username=None, password=None)
    with pytest.raises(EtcdAuthError, match="permission denied"):
        await Registry(no_password).connect()

    # a certificate and a wrong password
    wrong = dataclasses.replace(good, password="not-" + str(good.password))
    with pytest.raises(EtcdAuthError, match="refused user 'fleet'"):
        await Registry(wrong).connect()


def _etcdctl(
    cluster: Cluster, user: str, password: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """etcdctl with the sandbox's client certificate; the password in its environment."""
    pki = Path(cluster.state.pki_dir)
    return subprocess.run(
        [
            str(etcdctl_binary()),
            f"--endpoints=https://127.0.0.1:{cluster.state.etcd_port}",
            f"--cacert={pki / 'ca.pem'}",
            f"--cert={pki / 'sandbox.pem'}",
            f"--key={pki / 'sandbox-key.pem'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
        env={**os.environ, "ETCDCTL_API": "3", "ETCDCTL_USER": user, "ETCDCTL_PASSWORD": password},
    )


def _check_prefix_confinement(cluster: Cluster, secrets: dict[str, str]) -> None:
    """`fleet` reads and writes /fleet/ only; root can write elsewhere, fleet cannot read it."""
    put = _etcdctl(cluster, "root", secrets["root"], "put", "/elsewhere/secret", "42")
    assert put.returncode == 0, put.stderr
    outside = _etcdctl(cluster, "fleet", secrets["fleet"], "get", "/elsewhere/secret")
    assert outside.returncode != 0 and "permission denied" in outside.stderr, outside
    write = _etcdctl(cluster, "fleet", secrets["fleet"], "put", "/elsewhere/x", "1")
    assert write.returncode != 0 and "permission denied" in write.stderr, write
    inside = _etcdctl(
        cluster, "fleet", secrets["fleet"], "get", "--prefix", "--keys-only", "/fleet/job/"
    )
    assert inside.returncode == 0 and f"/fleet/job/{UNIT}" in inside.stdout, inside


def _check_no_secret_shown(
    cluster: Cluster, secrets: dict[str, str], up: subprocess.CompletedProcess[str]
) -> str:
    """No password in a log file of the sandbox, its state file, its output or the fleetds'
    command lines and environments (`ps -ww e`); returns what was searched."""
    logs = sorted(cluster.dir.rglob("*.log"))
    assert {p.name for p in logs} >= {"fleetd.log", "etcd.log"}, logs
    texts = {str(p): p.read_text(errors="replace") for p in logs}
    texts["sandbox.json"] = (cluster.dir / "sandbox.json").read_text()
    texts["sandbox up's output"] = up.stdout + up.stderr
    pids = [str(r.fleetd_pid) for r in cluster.state.machines]
    assert all(p != "0" for p in pids)
    texts["ps"] = subprocess.run(
        ["ps", "-ww", "e", "-o", "pid,args", "-p", ",".join(pids)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert texts["ps"].count("fleetd.main") == len(pids), texts["ps"]
    for pid in pids:
        texts[f"/proc/{pid}/environ"] = Path(f"/proc/{pid}/environ").read_bytes().decode()
    for where, text in texts.items():
        for user, password in secrets.items():
            assert password not in text, f"{user}'s etcd password shows in {where}"
    return f"{len(logs)} log files, sandbox.json, the output, ps and environ of {len(pids)} fleetds"
