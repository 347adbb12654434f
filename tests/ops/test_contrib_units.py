"""contrib/systemd/fleet.socket and fleet.service, run for real under a namespaced systemd.

The two files are installed as shipped, with only the host-specific values replaced: ExecStart
(this venv's fleetd, with flags for the test's etcd, the machine's bus and a per-test key prefix)
and ListenStream (a socket path in the machine's directory, reachable from the host). Everything
else — socket activation, Restart=always, KillMode=process, PartOf= — is what a real host gets.

Inside a sandbox machine the manager is `systemd --user`, reached with --dbus-address; fleetd
itself runs with systemd_user=false semantics, as the sandbox's fleetds do: in the machine's mount
namespace `/run/systemd/private` leads systemctl and journalctl to that machine's manager.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from fleetd.registry import EtcdConfig, KeyKind, Registry
from fleetd.sandbox.etcd import EtcdServer
from fleetd.sandbox.machine import Machine
from tests.waiting import put

pytestmark = pytest.mark.root

CONTRIB = Path(__file__).parents[2] / "contrib" / "systemd"
BIN = Path(sys.executable).parent
DEADLINE = 30.0  # a bound against hanging, never an expectation of speed

HELLO = """\
[Unit]
Description=survives fleetd restarts

[Service]
ExecStart=/bin/sleep infinity
"""


def adjusted(path: Path, replacements: dict[str, str]) -> str:
    """The unit file at `path` with the value of each `Key=` line in `replacements` replaced
    (each key must appear exactly once, so a renamed option in contrib/ fails the test)."""
    lines = path.read_text().splitlines()
    for key, value in replacements.items():
        hits = [i for i, line in enumerate(lines) if line.startswith(f"{key}=")]
        assert len(hits) == 1, f"{path.name}: expected one {key}= line, found {len(hits)}"
        lines[hits[0]] = f"{key}={value}"
    return "\n".join(lines) + "\n"


def options(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_shipped_units_say_what_a_host_needs() -> None:
    service, sock = options(CONTRIB / "fleet.service"), options(CONTRIB / "fleet.socket")
    assert sock["ListenStream"] == ["/run/fleet.sock"]  # /var/run/fleet.sock: /var/run -> /run
    assert sock["PartOf"] == ["fleet.service"]
    assert service["ExecStart"] == ["/usr/local/bin/fleetd"]
    assert service["Restart"] == ["always"]
    assert service["KillMode"] == ["process"]
    assert "fleet.socket" in service["Wants"]


async def until_machine_up(registry: Registry, machine_id: str, revision: int) -> None:
    async with registry.watch(revision) as events:
        async for event in events:
            if put(KeyKind.MACHINE, machine_id)(event):
                return


async def fleetctl(sock: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "fleetctl"), f"--endpoint=unix://{sock}", "--request-timeout=20", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
    assert proc.returncode == 0, f"fleetctl {' '.join(args)}: {err.decode()}"
    return out.decode()


async def systemctl(m: Machine, *args: str) -> str:
    return (await m.run("systemctl", "--user", *args, check=False)).strip()


async def main_pid(m: Machine, unit: str) -> int:
    return int(await systemctl(m, "show", "-p", "MainPID", "--value", unit))


async def test_contrib_units_start_fleetd_and_fleetctl_sees_it(
    etcd: EtcdServer, key_prefix: str, tmp_path: Path
) -> None:
    async with Machine(f"ops{os.getpid() % 100000}") as m:
        sock = m.root / "fleet.sock"
        own_sock = m.root / "fleetd-own.sock"  # where fleetd would bind if not activated
        flags = [
            f"--etcd-servers={','.join(etcd.endpoints)}",
            f"--etcd-key-prefix={key_prefix}",
            "--public-ip=127.0.0.1",
            f"--dbus-address={m.bus_address}",
            "--systemd-user=false",
            "--units-directory=/run/fleet/units",
            "--runtime-dir=/run/fleet",
            f"--api-socket={own_sock}",
            "--agent-ttl=10s",
        ]
        unit_dir = m.runtime_dir / "systemd" / "user"  # the user manager's runtime unit path
        unit_dir.mkdir(parents=True, exist_ok=True)
        (unit_dir / "fleet.service").write_text(
            adjusted(CONTRIB / "fleet.service", {"ExecStart": " ".join([str(BIN / "fleetd"), *flags])})
        )
        (unit_dir / "fleet.socket").write_text(
            adjusted(CONTRIB / "fleet.socket", {"ListenStream": str(sock)})
        )
        await m.run("systemctl", "--user", "daemon-reload")
        await m.run("systemctl", "--user", "start", "fleet.socket")
        assert await systemctl(m, "is-active", "fleet.socket") == "active"
        assert await systemctl(m, "is-active", "fleet.service") == "inactive"
        assert sock.is_socket()

        config = EtcdConfig(endpoints=etcd.endpoints, key_prefix=key_prefix, request_timeout=5.0)
        async with Registry(config) as registry:
            revision = (await registry.snapshot()).revision + 1
            joined = asyncio.ensure_future(until_machine_up(registry, m.machine_id, revision))
            try:
                # The first connection starts fleet.service (socket activation). fleetd serves
                # the API before its agent registers, so this answer may list no machine yet.
                await fleetctl(sock, "list-machines")
                await asyncio.wait_for(joined, DEADLINE)
            finally:
                joined.cancel()
            assert await systemctl(m, "is-active", "fleet.service") == "active", await journal(m)
            fleetd_pid = await main_pid(m, "fleet.service")
            assert str(BIN / "fleetd") in cmdline(fleetd_pid)

            assert not own_sock.exists()  # it serves the socket systemd passed it
            listed = await fleetctl(sock, "list-machines", "--full", "--no-legend")
            assert listed.split() == [m.machine_id, "127.0.0.1", "-"], await journal(m)

            # A unit started through the socket keeps running while fleetd restarts.
            (tmp_path / "hello.service").write_text(HELLO)
            started = await fleetctl(sock, "start", str(tmp_path / "hello.service"))
            assert f"Unit hello.service launched on {m.machine_id[:8]}..." in started
            unit_pid = await main_pid(m, "hello.service")
            assert unit_pid > 0

            revision = (await registry.snapshot()).revision + 1
            rejoined = asyncio.ensure_future(until_machine_up(registry, m.machine_id, revision))
            try:
                await m.run("systemctl", "--user", "restart", "fleet.service")
                await asyncio.wait_for(rejoined, DEADLINE)
            finally:
                rejoined.cancel()
            assert await main_pid(m, "fleet.service") not in (0, fleetd_pid)
            assert await main_pid(m, "hello.service") == unit_pid
            assert not own_sock.exists()
            units = await fleetctl(sock, "list-units", "--full", "--no-legend")
            assert units.split() == ["hello.service", f"{m.machine_id}/127.0.0.1", "active",
                                     "running"]  # fmt: skip


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().split("\0")


async def journal(m: Machine) -> str:
    """fleetd's own log lines, for a failing assertion's message."""
    return await m.run("journalctl", "--no-pager", "-n", "60", check=False)
