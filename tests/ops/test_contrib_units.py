"""contrib/systemd as a packager installs it: what the files say, and fleet.socket with
fleet.service run for real under a namespaced systemd (tests/ops/fleet_host.py: the shipped
files, with only ExecStart adapted to this venv and the test's etcd).

tests/ops/test_fleet_service.py holds the rest under a real systemd: Type=notify, the watchdog,
requests waiting in the socket across restarts, STOPPING=1, the `fleet` group, KillMode.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from fleetd.config import Config
from fleetd.registry import EtcdConfig, KeyKind, Registry
from fleetd.sandbox.etcd import EtcdServer
from fleetd.sandbox.machine import Machine
from tests.ops.fleet_host import BIN, CONTRIB, DEADLINE, FleetHost, options
from tests.waiting import put

HELLO = """\
[Unit]
Description=survives fleetd restarts

[Service]
ExecStart=/bin/sleep infinity
"""


def test_shipped_units_say_what_a_host_needs() -> None:
    service, sock = options(CONTRIB / "fleet.service"), options(CONTRIB / "fleet.socket")
    assert sock["ListenStream"] == ["/run/fleet.sock"]  # /var/run/fleet.sock: /var/run -> /run
    assert "PartOf" not in sock  # `systemctl restart fleet` keeps the socket and its backlog
    assert (sock["SocketGroup"], sock["SocketMode"]) == (["fleet"], ["0660"])
    assert service["ExecStart"] == ["/usr/bin/fleetd"]  # the package's path
    assert (service["Type"], service["NotifyAccess"]) == (["notify"], ["main"])
    assert service["WatchdogSec"] == ["30s"]
    assert service["Restart"] == ["on-failure"]
    assert service["RestartPreventExitStatus"] == ["2"]  # configuration errors
    assert service["KillMode"] == ["mixed"]  # no helper outlives fleetd; units are not its
    assert "fleet.socket" in service["Wants"]
    assert service["Documentation"] and sock["Documentation"]


def test_the_group_and_directories_are_those_fleetd_and_the_socket_use() -> None:
    sysusers = (CONTRIB / "sysusers.d" / "fleetd.conf").read_text().splitlines()
    groups = [line.split()[1] for line in sysusers if line.startswith("g ")]
    assert groups == options(CONTRIB / "fleet.socket")["SocketGroup"]
    tmpfiles = (CONTRIB / "tmpfiles.d" / "fleetd.conf").read_text().splitlines()
    made = {line.split()[1] for line in tmpfiles if line.startswith("d ")}
    defaults = Config()
    assert made == {defaults.runtime_dir, defaults.units_directory.rstrip("/")}


async def until_machine_up(registry: Registry, machine_id: str, revision: int) -> None:
    async with registry.watch(revision) as events:
        async for event in events:
            if put(KeyKind.MACHINE, machine_id)(event):
                return


@pytest.mark.root
async def test_contrib_units_start_fleetd_and_fleetctl_sees_it(
    etcd: EtcdServer, key_prefix: str, tmp_path: Path
) -> None:
    async with Machine(f"ops{os.getpid() % 100000}") as m:
        host = FleetHost(m, etcd.endpoints, key_prefix)
        own_sock = m.root / "fleetd-own.sock"  # where fleetd would bind if not activated
        await host.install(flags=[f"--api-socket={own_sock}"])
        await host.start("fleet.socket")
        assert (await host.show("fleet.socket", "ActiveState"))["ActiveState"] == "active"
        assert (await host.show("fleet.service", "ActiveState"))["ActiveState"] == "inactive"
        assert host.path("/run/fleet.sock").is_socket()

        config = EtcdConfig(endpoints=etcd.endpoints, key_prefix=key_prefix, request_timeout=5.0)
        async with Registry(config) as registry:
            revision = (await registry.snapshot()).revision + 1
            joined = asyncio.ensure_future(until_machine_up(registry, m.machine_id, revision))
            try:
                # The first connection starts fleet.service (socket activation) and waits in
                # the backlog until fleetd serves. fleetd serves the API before its agent
                # registers (READY=1 comes after both), so this answer may list no machine yet.
                await host.fleetctl_ok("list-machines")
                await asyncio.wait_for(joined, DEADLINE)
            finally:
                joined.cancel()
            listed = await host.fleetctl_ok("list-machines", "--full", "--no-legend")
            assert listed.split() == [m.machine_id, "127.0.0.1", "-"], await host.journal()
            assert (await host.show("fleet.service", "ActiveState"))["ActiveState"] == "active"
            fleetd_pid = await host.main_pid("fleet.service")
            assert str(BIN / "fleetd") in cmdline(fleetd_pid)
            assert not own_sock.exists()  # it serves the socket systemd passed it

            # A unit started through the socket keeps running while fleetd restarts.
            (tmp_path / "hello.service").write_text(HELLO)
            started = await host.fleetctl_ok("start", str(tmp_path / "hello.service"))
            assert f"Unit hello.service launched on {m.machine_id[:8]}..." in started
            unit_pid = await host.main_pid("hello.service")
            assert unit_pid > 0

            revision = (await registry.snapshot()).revision + 1
            rejoined = asyncio.ensure_future(until_machine_up(registry, m.machine_id, revision))
            try:
                rc, out = await host.systemctl("restart", "fleet.service")
                assert rc == 0, out
                await asyncio.wait_for(rejoined, DEADLINE)
            finally:
                rejoined.cancel()
            assert await host.main_pid("fleet.service") not in (0, fleetd_pid)
            assert await host.main_pid("hello.service") == unit_pid
            assert not own_sock.exists()
            units = await host.fleetctl_ok("list-units", "--full", "--no-legend")
            assert units.split() == ["hello.service", f"{m.machine_id}/127.0.0.1", "active",
                                     "running"]  # fmt: skip


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().split("\0")
