"""Adapter restarts adopt running units; a dropped bus is reconnected and states re-emitted."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from systemd_helpers import EVENT_DEADLINE, HELLO, wait_state

from fleetd.sandbox.machine import Machine
from fleetd.systemd import SystemdManager

pytestmark = [pytest.mark.root, pytest.mark.asyncio(loop_scope="module")]


async def systemctl_main_pid(machine: Machine, unit: str) -> int:
    out = await machine.run("systemctl", "--user", "show", "-p", "MainPID", "--value", unit)
    return int(out.strip())


async def test_a_restarted_adapter_adopts_running_units_without_restarting_them(
    machine: Machine, tmp_path: Path
) -> None:
    config = machine.systemd_config(units_dir=tmp_path / "units")
    async with SystemdManager(config) as first:
        changes = first.changes()
        await first.load_many({"adopt1.service": HELLO, "adopt2.service": HELLO})
        await asyncio.gather(first.start_unit("adopt1.service"), first.start_unit("adopt2.service"))
        await wait_state(changes, "adopt2.service", sub="running")
        pids = {n: await first.main_pid(n) for n in ("adopt1.service", "adopt2.service")}

    async with SystemdManager(config) as second:
        adopted = second.adopted  # what start() found, before anything was asked of systemd
        assert {n: (s.active, s.sub) for n, s in adopted.items()} == {
            "adopt1.service": ("active", "running"),
            "adopt2.service": ("active", "running"),
        }
        for name, pid in pids.items():
            assert await second.main_pid(name) == pid
            assert await systemctl_main_pid(machine, name) == pid
        # a new subscriber first gets the adopted states
        replay = second.changes()
        assert (await wait_state(replay, "adopt1.service")).sub == "running"
        await asyncio.gather(*(second.stop_unit(n) for n in pids))


async def test_the_stream_resumes_and_re_emits_states_after_the_bus_drops(
    machine: Machine, manager: SystemdManager
) -> None:
    changes = manager.changes()
    await manager.load("steady.service", HELLO)
    await manager.start_unit("steady.service")
    await wait_state(changes, "steady.service", sub="running")
    connects = manager.connect_count

    # a real drop: kill the machine's dbus-daemon (socket activation brings a new one up)
    bus_pid = await systemctl_main_pid(machine, "dbus.service")
    dropped = asyncio.create_task(manager._bus.wait_disconnected())  # type: ignore[union-attr]
    os.kill(bus_pid, signal.SIGKILL)
    await asyncio.wait_for(dropped, EVENT_DEADLINE)

    # after reconnecting the adapter pushes the current state again...
    state = await wait_state(changes, "steady.service", within=30)
    assert state.sub == "running"
    assert manager.connect_count == connects + 1
    # ...and signals flow on the new connection
    assert await manager.stop_unit("steady.service") == "done"
    await wait_state(changes, "steady.service", active="inactive", sub="dead")
