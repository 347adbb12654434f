"""Journal and status of a unit, read with journalctl/systemctl inside the machine."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from systemd_helpers import EVENT_DEADLINE, HELLO, process_gone, wait_state

from fleetd.sandbox.etcd import EtcdServer
from fleetd.sandbox.machine import Machine
from fleetd.systemd import SystemdManager
from tests.forked_children import run_forked_children

pytestmark = [pytest.mark.root, pytest.mark.asyncio(loop_scope="module")]


async def hello_lines(stream, count: int) -> list[str]:
    lines = []
    async for line in stream:
        if "Hello World" in line:
            lines.append(line)
            if len(lines) == count:
                return lines
    return lines


async def test_follow_yields_lines_as_they_are_written_then_journal_returns_them(
    manager: SystemdManager,
) -> None:
    async with manager.journal("hello.service", lines=0, follow=True) as follow:
        await manager.load("hello.service", HELLO)
        await manager.start_unit("hello.service")
        # the unit writes a line a second: a second line proves lines keep coming
        lines = await asyncio.wait_for(hello_lines(follow, 2), EVENT_DEADLINE)
        assert all("sh[" in line for line in lines)
    assert follow.proc is not None and follow.proc.returncode is not None

    async with manager.journal("hello.service", lines=5) as journal:
        got = [line async for line in journal]
    assert 1 <= len(got) <= 5
    assert any("Hello World" in line for line in got)
    await manager.stop_unit("hello.service")


async def lines_until(stream, last: str) -> list[str]:
    """The messages (after `sh[pid]: `) the stream yields, up to and including `last`."""
    got = []
    async for line in stream:
        got.append(line.rsplit(": ", 1)[-1])
        if got[-1] == last:
            return got
    raise AssertionError(f"the stream ended before {last!r}: {got}")


async def test_a_follow_opened_before_the_units_first_line_shows_every_line(
    manager: SystemdManager,
) -> None:
    # journalctl 252's own `--follow --lines N` lost the first lines of a unit that had none yet
    five = (
        "[Service]\nExecStart=/bin/sh -c 'for i in 1 2 3 4 5; do echo L$i; done; exec sleep 600'\n"
    )
    async with manager.journal("fresh.service", lines=10, follow=True) as follow:
        await manager.load("fresh.service", five)
        await manager.start_unit("fresh.service")
        got = await asyncio.wait_for(lines_until(follow, "L5"), EVENT_DEADLINE)
    assert got == ["L1", "L2", "L3", "L4", "L5"]
    await manager.stop_unit("fresh.service")


async def test_a_follow_shows_the_last_lines_then_each_new_line_once(
    manager: SystemdManager, tmp_path: Path
) -> None:
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    unit = (
        "[Service]\nExecStart=/bin/sh -c 'for i in 1 2 3 4 5; do echo L$i; done; "
        f"read x < {fifo}; echo L6; exec sleep 600'\n"
    )
    async with manager.journal("later.service", lines=0, follow=True) as first:
        await manager.load("later.service", unit)
        await manager.start_unit("later.service")
        await asyncio.wait_for(lines_until(first, "L5"), EVENT_DEADLINE)  # all 5 are written
    async with manager.journal("later.service", lines=2, follow=True) as follow:
        assert await asyncio.wait_for(lines_until(follow, "L5"), EVENT_DEADLINE) == ["L4", "L5"]
        await asyncio.wait_for(asyncio.to_thread(fifo.write_text, "go\n"), EVENT_DEADLINE)
        assert await asyncio.wait_for(lines_until(follow, "L6"), EVENT_DEADLINE) == ["L6"]
    await manager.stop_unit("later.service")


async def test_cancelling_a_follow_leaves_no_journalctl(manager: SystemdManager) -> None:
    await manager.load("chatty.service", HELLO)
    await manager.start_unit("chatty.service")
    stream = manager.journal("chatty.service", follow=True)
    first_line = asyncio.get_running_loop().create_future()

    async def read() -> None:
        async with stream:
            async for line in stream:
                if not first_line.done():
                    first_line.set_result(line)

    reader = asyncio.create_task(read())
    await asyncio.wait_for(first_line, EVENT_DEADLINE)
    assert stream.proc is not None
    pid = stream.proc.pid
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert stream.proc.returncode is not None  # reaped by us
    assert process_gone(pid)
    await manager.stop_unit("chatty.service")


async def test_each_read_from_a_process_watching_etcd_shows_the_units_lines(
    manager: SystemdManager, machine: Machine, etcd: EtcdServer
) -> None:
    # fleetd reads a journal (journalctl --sync, then journalctl) while its etcd client has a
    # watch open, on uvloop: with gRPC's fork handlers on, about one journalctl in a hundred
    # died before its exec and the read came back empty (tests/registry/
    # test_registry_forked_children.py has the cause alone)
    text = "[Service]\nExecStart=/bin/sh -c 'echo said-once; exec sleep 600'\n"
    async with manager.journal("said.service", lines=0, follow=True) as follow:
        await manager.load("said.service", text)
        await manager.start_unit("said.service")
        await asyncio.wait_for(lines_until(follow, "said-once"), EVENT_DEADLINE)
    where = [machine.name, machine.machine_id, str(machine.root), str(machine.systemd_pid)]
    result = await asyncio.to_thread(
        run_forked_children, etcd.endpoints[0], "journal", "300", "said.service", "said-once",
        *where,
    )  # fmt: skip
    assert result == {"reads": 300, "without_text": 0}
    await manager.stop_unit("said.service")


async def test_status_is_systemctl_status_text(manager: SystemdManager) -> None:
    changes = manager.changes()
    await manager.load("shown.service", HELLO)
    await manager.start_unit("shown.service")
    await wait_state(changes, "shown.service", sub="running")
    text = await manager.status("shown.service")
    assert "shown.service" in text
    assert "active (running)" in text
    assert f"Main PID: {await manager.main_pid('shown.service')}" in text
    await manager.stop_unit("shown.service")
    assert "inactive (dead)" in await manager.status("shown.service")
