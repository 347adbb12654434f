"""Sandbox machines: three side by side stay apart; crash (kill) and restart; clean teardown."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from systemd_helpers import EVENT_DEADLINE, process_gone, wait_state

from fleetd.sandbox.machine import Machine
from fleetd.systemd import SystemdManager

pytestmark = [pytest.mark.root, pytest.mark.asyncio(loop_scope="module")]


def unit_for(machine: Machine) -> str:
    return f"[Service]\nExecStart=/bin/sh -c 'while true; do echo from {machine.name}; sleep 1; done'\n"


def cgroup_of(pid: int) -> str:
    return Path(f"/proc/{pid}/cgroup").read_text()


def host_mounts() -> str:
    return Path("/proc/self/mountinfo").read_text()


async def first_line(manager: SystemdManager, unit: str) -> str:
    async with manager.journal(unit, lines=5, follow=True) as lines:
        return await asyncio.wait_for(anext(lines), EVENT_DEADLINE)


async def test_three_machines_each_see_only_their_own_units_and_journal(tmp_path: Path) -> None:
    tag = os.getpid() % 100000
    machines = [Machine(f"side{i}{tag}") for i in range(3)]
    try:
        await asyncio.gather(*(m.start() for m in machines))
        managers = [SystemdManager(m.systemd_config(units_dir=tmp_path / m.name)) for m in machines]
        await asyncio.gather(*(mgr.start() for mgr in managers))
        # the same unit name on every machine (a Global unit) plus one unit of each machine's own
        for m, mgr in zip(machines, managers, strict=True):
            changes = mgr.changes()
            await mgr.load_many({"app.service": unit_for(m), f"only-{m.name}.service": unit_for(m)})
            await mgr.start_unit("app.service")
            await mgr.start_unit(f"only-{m.name}.service")
            await wait_state(changes, "app.service", sub="running")
            assert "from " + m.name in await first_line(mgr, "app.service")

        for m, mgr in zip(machines, managers, strict=True):
            others = [o.name for o in machines if o is not m]
            assert set(await mgr.states()) == {"app.service", f"only-{m.name}.service"}
            listed = await m.run(
                "systemctl", "--user", "list-units", "--all", "--plain", "--no-legend", "only-*"
            )
            assert f"only-{m.name}.service" in listed
            assert not any(f"only-{o}.service" in listed for o in others)
            async with mgr.journal("app.service", lines=20) as journal:
                text = "\n".join([line async for line in journal])
            assert f"from {m.name}" in text
            assert not any(f"from {o}" in text for o in others)
            assert (await m.run("cat", "/etc/machine-id")).strip() == m.machine_id
            # the unit runs in the machine's own cgroup
            pid = await mgr.main_pid("app.service")
            assert f"/{m.slice}/app.slice/app.service" in cgroup_of(pid)
        assert len({m.machine_id for m in machines}) == 3
        unit_pids = [await mgr.main_pid("app.service") for mgr in managers]
        await asyncio.gather(*(mgr.close() for mgr in managers))
        systemd_pids = [m.systemd_pid for m in machines]
    finally:
        await asyncio.gather(*(m.stop() for m in machines))
    assert all(process_gone(pid) for pid in unit_pids + systemd_pids)
    for m in machines:
        assert not any(cg.exists() for cg in m.cgroups)
        assert str(m.root) not in host_mounts()
        m.remove()


async def test_kill_crashes_every_process_and_start_brings_the_same_machine_back(
    tmp_path: Path,
) -> None:
    machine = Machine(f"crash{os.getpid() % 100000}")
    try:
        await machine.start()
        async with SystemdManager(machine.systemd_config()) as mgr:
            await mgr.load("victim.service", unit_for(machine))
            await mgr.start_unit("victim.service")
            victim = await mgr.main_pid("victim.service")
        systemd_pid = machine.systemd_pid
        await machine.kill()
        assert process_gone(victim) and process_gone(systemd_pid)
        assert not any(cg.exists() for cg in machine.cgroups)

        await machine.start()  # same machine ID, same units dir and runtime links
        assert (await machine.run("cat", "/etc/machine-id")).strip() == machine.machine_id
        async with SystemdManager(machine.systemd_config()) as mgr:
            assert mgr.adopted["victim.service"].active == "inactive"  # the crash stopped it
            assert await mgr.start_unit("victim.service") == "done"
    finally:
        await machine.stop()
        machine.remove()
    assert not machine.root.exists()
    assert not any(cg.exists() for cg in machine.cgroups)


async def test_commands_run_inside_the_machine_namespace_with_its_environment(
    machine: Machine,
) -> None:
    out = await machine.run(
        "sh",
        "-c",
        'echo "$XDG_RUNTIME_DIR $DBUS_SESSION_BUS_ADDRESS"; ls /run/fleet; cat /proc/self/cgroup',
    )
    assert f"{machine.runtime_dir} {machine.bus_address}" in out
    assert "units" in out.splitlines()[1]
    assert f"/{machine.slice}" in out
