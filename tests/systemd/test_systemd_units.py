"""The adapter against a real systemd --user: link, start, stop, failures, batching, templates."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from systemd_helpers import EVENT_DEADLINE, HELLO, wait_state

from fleetd.sandbox.machine import Machine
from fleetd.systemd import LOAD_FAILED, BadUnitName, SystemdManager
from fleetd.unit import parse_unit

pytestmark = [pytest.mark.root, pytest.mark.asyncio(loop_scope="module")]


async def test_hello_start_and_stop_arrive_as_pushed_events(manager: SystemdManager) -> None:
    changes = manager.changes()
    await manager.load("hello.service", parse_unit(HELLO))
    assert await manager.start_unit("hello.service") == "done"
    await wait_state(changes, "hello.service", load="loaded", active="active", sub="running")
    assert await manager.stop_unit("hello.service") == "done"
    await wait_state(changes, "hello.service", active="inactive", sub="dead")
    states = await manager.states()
    assert states["hello.service"].active == "inactive"


async def test_a_process_that_exits_1_gives_a_failed_event(manager: SystemdManager) -> None:
    changes = manager.changes()
    await manager.load("false.service", "[Service]\nExecStart=/bin/false\n")
    await manager.start_unit("false.service")
    await wait_state(changes, "false.service", active="failed", sub="failed")


@pytest.mark.parametrize(
    ("text", "load"),
    [
        ("[Service]\nType=simple\n", "bad-setting"),  # no ExecStart=: systemd refuses the unit
        ("[Service]\nExecStart=/bin/true\nType=no-such-type\nExecStart=\n", "bad-setting"),
    ],
    ids=["no-execstart", "execstart-reset"],
)
async def test_a_unit_systemd_rejects_surfaces_as_a_load_state(
    manager: SystemdManager, text: str, load: str
) -> None:
    changes = manager.changes()
    await manager.load("rejected.service", text)
    state = await wait_state(changes, "rejected.service", load=load)  # pushed once linked
    assert state.active == "inactive"
    assert await manager.start_unit("rejected.service") == LOAD_FAILED  # no exception
    assert (await manager.states())["rejected.service"].load == load
    # the caller carries on: another unit still starts
    await manager.load("after.service", HELLO)
    assert await manager.start_unit("after.service") == "done"
    await manager.stop_unit("after.service")


async def test_a_unit_without_a_file_is_not_found_not_an_exception(
    manager: SystemdManager,
) -> None:
    assert await manager.start_unit("missing.service") == LOAD_FAILED
    assert (await manager.unit_state("missing.service")).load == "not-found"


async def test_a_hundred_new_units_are_linked_without_a_reload_and_replaced_with_one(
    manager: SystemdManager, tmp_path: Path
) -> None:
    """New units need no daemon-reload (systemd finds a file linked since its last reload when
    the unit is first asked for); a file written over a loaded one does, once per batch."""
    names = [f"batch{i:03}.service" for i in range(100)]
    before = manager.reload_count
    await asyncio.gather(*(manager.load(n, "[Service]\nExecStart=/bin/sleep 600\n") for n in names))
    assert manager.reload_count == before
    await asyncio.gather(*(manager.load(n, "[Service]\nExecStart=/bin/sleep 700\n") for n in names))
    assert manager.reload_count - before == 1
    changes = manager.changes(replay=False)
    results = await asyncio.gather(*(manager.start_unit(n) for n in names))
    assert set(results) == {"done"}
    running = {n for n, s in (await manager.states()).items() if s.sub == "running"}
    assert set(names) <= running
    main = await manager.main_pid(names[0])
    cmdline = await asyncio.to_thread(Path(f"/proc/{main}/cmdline").read_bytes)
    assert cmdline.split(b"\0")[:2] == [b"/bin/sleep", b"700"]  # the replaced content runs
    seen = set()
    while seen != set(names):  # every start was also pushed
        state = await asyncio.wait_for(anext(changes), EVENT_DEADLINE)
        if state.name in names and state.sub == "running":
            seen.add(state.name)
    before = manager.reload_count
    await asyncio.gather(*(manager.stop_unit(n) for n in names))
    await asyncio.gather(*(manager.unload(n) for n in names))
    assert manager.reload_count - before == 1
    assert not set(names) & set(manager.units.names())
    assert not set(names) & set(await manager.states())


async def test_template_instance_runs_with_its_instance_name(
    manager: SystemdManager, tmp_path: Path
) -> None:
    out = tmp_path / "apache-out"
    out.mkdir()
    # ExecStartPre ends before the main process starts: at `active` the file is written (an
    # `echo` in ExecStart could still be pending then, and a stop right after would lose it)
    template = (
        f"[Service]\nExecStartPre=/bin/sh -c 'echo %i > {out}/port'\nExecStart=/bin/sleep 600\n"
    )
    changes = manager.changes()
    await manager.load("apache@.service", template)
    assert await manager.start_unit("apache@80.service") == "done"
    await wait_state(changes, "apache@80.service", active="active", sub="running")
    # the instance is managed through its template, so adoption lists it too
    assert (await manager.states())["apache@80.service"].sub == "running"
    await manager.stop_unit("apache@80.service")
    await wait_state(changes, "apache@80.service", active="inactive")
    assert (out / "port").read_text().strip() == "80"


async def test_an_instance_file_gets_its_instance_from_its_name(
    manager: SystemdManager, tmp_path: Path
) -> None:
    out = tmp_path / "port"
    await manager.load(
        "web@8080.service", f"[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo %i > {out}'\n"
    )
    assert await manager.start_unit("web@8080.service") == "done"
    assert out.read_text().strip() == "8080"


@pytest.mark.parametrize(
    "name",
    ["../escape.service", "a/b.service", ".hidden.service", "noext", "x.unknown"],
)
async def test_bad_names_never_touch_the_units_dir(manager: SystemdManager, name: str) -> None:
    with pytest.raises(BadUnitName):
        await manager.load(name, HELLO)
    assert manager.units.names() == []
    assert not (manager.units.path.parent / "escape.service").exists()


async def test_unload_unlinks_and_removes_the_file(
    manager: SystemdManager, machine: Machine
) -> None:
    await manager.load("gone.service", HELLO)
    assert "gone.service" in manager.units.names()
    assert (machine.runtime_dir / "systemd" / "user" / "gone.service").is_symlink()
    await manager.unload("gone.service")
    assert "gone.service" not in manager.units.names()
    assert not (machine.runtime_dir / "systemd" / "user" / "gone.service").exists()


async def test_concurrent_starts_of_one_unit_share_its_job(manager: SystemdManager) -> None:
    await manager.load("twice.service", HELLO)
    results = await asyncio.gather(*(manager.start_unit("twice.service") for _ in range(3)))
    assert results == ["done", "done", "done"]
    assert await manager.stop_unit("twice.service") == "done"


async def test_a_thousand_concurrent_starts_and_stops_keep_the_bus(manager: SystemdManager) -> None:
    """dbus-fast drops the connection when a send finds the socket's buffer full (EAGAIN)
    instead of waiting for it to drain: 1,000 calls sent at once did (`make bench`). The
    adapter bounds the calls in flight, so the bus stays and every job ends done."""
    names = [f"burst{i:04}.service" for i in range(1000)]
    await asyncio.gather(*(manager.load(n, "[Service]\nExecStart=/bin/sleep 600\n") for n in names))
    connects = manager.connect_count
    assert set(await asyncio.gather(*(manager.start_unit(n) for n in names))) == {"done"}
    assert set(await asyncio.gather(*(manager.stop_unit(n) for n in names))) == {"done"}
    await asyncio.gather(*(manager.unload(n) for n in names))
    assert manager.connect_count == connects, "the bus was lost and reconnected"
    assert not set(names) & set(manager.units.names())
