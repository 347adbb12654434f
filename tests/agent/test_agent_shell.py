"""The agent against a real etcd and real namespaced systemd machines (root only)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetd.model import JobState
from fleetd.registry import EtcdConfig, Registry
from fleetd.unit import parse_unit
from tests.faults.inprocess import Node
from tests.running import engine_running
from tests.waiting import until

pytestmark = pytest.mark.root

HELLO = parse_unit(
    "[Unit]\nDescription=Hello World\n\n[Service]\n"
    "ExecStart=/bin/sh -c 'while true; do echo Hello World; sleep 1; done'\n"
)


def apache(tmp: Path):
    # The file is written by ExecStartPre, which ends before the main process is started: so
    # `active` means the file is there (an `echo` in ExecStart may still be pending at `active`).
    return parse_unit(
        "[Unit]\nDescription=Fake Apache instance %i\n[Service]\n"
        f"ExecStartPre=/bin/sh -c 'echo %i > {tmp}/apache-%i'\n"
        "ExecStart=/bin/sleep infinity\n"
        "[X-Fleet]\nX-Conflicts=apache@*.service\n"
    )


@contextlib.asynccontextmanager
async def cluster(
    registry: Registry,
    count: int,
    ttl: int = 5,
    metadata: list[dict[str, str]] | None = None,
    **agent_args,
) -> AsyncIterator[list[Node]]:
    """`count` machines, each with its agent (the in-process Node of the fault tests), and an
    engine on the first one's side."""
    nodes = [
        Node(f"ag{i}", registry, ttl, f"127.0.0.{11 + i}", md)
        for i, md in enumerate(metadata or [{}] * count)
    ]
    try:
        await asyncio.gather(*(n.machine.start() for n in nodes))
        for n in nodes:
            await n.start(**agent_args)
        async with engine_running(registry, nodes[0].id, lease_ttl=ttl):
            yield nodes
    finally:
        await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)


def state_of(snapshot, name: str):
    return [s for (n, _), s in snapshot.states.items() if n == name]


async def test_unit_lifecycle_on_one_machine(registry: Registry) -> None:
    async with cluster(registry, 1) as (node,):
        mid = node.doc.id
        await registry.create_job("hello.service", HELLO, JobState.LAUNCHED)
        await until(
            registry,
            lambda s: any(
                st.active == "active" and st.sub == "running" for st in state_of(s, "hello.service")
            ),
        )
        assert (await node.manager.unit_state("hello.service")).active == "active"
        # stop → loaded: inactive/dead, the file stays
        await registry.set_desired("hello.service", JobState.LOADED)
        snap = await until(
            registry, lambda s: any(st.active == "inactive" for st in state_of(s, "hello.service"))
        )
        assert state_of(snap, "hello.service")[0].sub == "dead"
        assert (node.manager.units.path_of("hello.service")).exists()
        # unload → file removed, state gone
        await registry.set_desired("hello.service", JobState.INACTIVE)
        await until(registry, lambda s: not state_of(s, "hello.service"))
        await asyncio.wait_for(
            _until(lambda: not node.manager.units.path_of("hello.service").exists(), node), 20
        )
        # start again, then destroy → nothing left on the machine
        await registry.set_desired("hello.service", JobState.LAUNCHED)
        await until(
            registry, lambda s: any(st.active == "active" for st in state_of(s, "hello.service"))
        )
        await registry.destroy("hello.service")
        await asyncio.wait_for(_until(lambda: not node.manager.units.names(), node), 20)
        assert (await node.manager.unit_state("hello.service")).load in ("not-found", "stub")
        snap = await registry.snapshot()
        assert not snap.states and not snap.placements
        assert mid in snap.machines


async def _until(predicate, node: Node) -> None:
    """Wait (on the agent's applied-plan signal) until predicate holds."""
    while not predicate():
        await node.agent.wait_applied()


async def test_template_instance_runs_with_instance_name(
    registry: Registry, tmp_path: Path
) -> None:
    async with cluster(registry, 1):
        await registry.create_job("apache@80.service", apache(tmp_path), JobState.LAUNCHED)
        await until(
            registry,
            lambda s: any(st.active == "active" for st in state_of(s, "apache@80.service")),
        )
        assert (tmp_path / "apache-80").read_text().strip() == "80"


async def test_global_unit_runs_where_metadata_matches(registry: Registry) -> None:
    glob = parse_unit(
        "[Service]\nExecStart=/bin/sleep infinity\n[X-Fleet]\nGlobal=true\nMachineMetadata=role=web\n"
    )
    md = [{"role": "web"}, {"role": "db"}, {"role": "web"}]
    async with cluster(registry, 3, metadata=md) as nodes:
        await registry.create_job("global.service", glob, JobState.LAUNCHED)
        snap = await until(
            registry,
            lambda s: sum(st.active == "active" for st in state_of(s, "global.service")) == 2,
        )
        running_on = {st.machine_id for st in state_of(snap, "global.service")}
        assert running_on == {nodes[0].doc.id, nodes[2].doc.id}
        assert "global.service" not in snap.placements  # the engine never places Global units
        # dynamic metadata (PATCH /machines) overrides the configured one: web on node 1,
        # role removed on node 2 -> the Global unit runs on nodes 0 and 1
        await registry.set_machine_metadata(
            {nodes[1].doc.id: {"role": "web"}, nodes[2].doc.id: {"role": ""}}
        )
        await until(
            registry,
            lambda s: (
                {st.machine_id for st in state_of(s, "global.service") if st.active == "active"}
                == {nodes[0].doc.id, nodes[1].doc.id}
                and len(state_of(s, "global.service")) == 2
            ),
        )


async def test_restart_adopts_running_units_without_restarting(registry: Registry) -> None:
    async with cluster(registry, 1) as (node,):
        await registry.create_job("hello.service", HELLO, JobState.LAUNCHED)
        await until(
            registry, lambda s: any(st.active == "active" for st in state_of(s, "hello.service"))
        )
        pid = await node.manager.main_pid("hello.service")
        lease_before = node.agent.lease.id
        await node.crash()
        await node.start()
        assert node.agent.lease.reattached and node.agent.lease.id == lease_before
        await node.agent.wait_applied()
        assert await node.manager.main_pid("hello.service") == pid
        assert (await node.manager.unit_state("hello.service")).active == "active"


async def test_leave_moves_units_at_once(registry: Registry) -> None:
    async with cluster(registry, 2, ttl=30) as nodes:
        await registry.create_job("hello.service", HELLO, JobState.LAUNCHED)
        snap = await until(
            registry, lambda s: any(st.active == "active" for st in state_of(s, "hello.service"))
        )
        first = state_of(snap, "hello.service")[0].machine_id
        leaving = next(n for n in nodes if n.doc.id == first)
        await leaving.agent.leave()
        # at once: the machine is gone when leave() returns, not when its 30 s lease would expire
        assert first not in (await registry.snapshot()).machines
        # and it stays gone: the revoked lease is not taken for a lost one to register again
        # (a fleetd that had not exited yet once brought its machine back)
        await asyncio.wait_for(leaving.agent.left.wait(), 10)
        assert not leaving.agent.registered.is_set()
        assert first not in (await registry.snapshot()).machines
        leaving.task.cancel()
        snap = await until(
            registry,
            lambda s: any(
                st.active == "active" and st.machine_id != first
                for st in state_of(s, "hello.service")
            ),
        )
        assert (await leaving.manager.unit_state("hello.service")).active != "active"


async def test_fencing_stops_units_when_etcd_is_gone(private_etcd, key_prefix: str) -> None:
    config = EtcdConfig(
        endpoints=private_etcd.endpoints, key_prefix=key_prefix, request_timeout=1.0
    )
    async with (
        Registry(config) as registry,
        cluster(registry, 1, ttl=3, fence_on_lease_loss=True) as (node,),
    ):
        await registry.create_job("hello.service", HELLO, JobState.LAUNCHED)
        await until(
            registry, lambda s: any(st.active == "active" for st in state_of(s, "hello.service"))
        )
        changes = node.manager.changes(replay=False)
        private_etcd.stop()

        async def stopped() -> None:
            async for st in changes:
                if st.name == "hello.service" and st.active in ("inactive", "failed"):
                    return

        await asyncio.wait_for(stopped(), 3 + 2)  # before the lease's TTL ends (+ slack)
        assert node.agent.fenced


def restarted_with(name: str, token: str):
    """The machine reports `name` active with the restart `token` done."""
    return lambda s: any(
        st.active == "active" and st.restarted == token for st in state_of(s, name)
    )


async def test_restart_request_restarts_once_and_survives_a_fleetd_restart(
    registry: Registry,
) -> None:
    async with cluster(registry, 1) as (node,):
        mid = node.doc.id
        await registry.create_job("hello.service", HELLO, JobState.LAUNCHED)
        await until(
            registry, lambda s: any(st.active == "active" for st in state_of(s, "hello.service"))
        )
        first = await node.manager.main_pid("hello.service")
        await registry.request_restart("hello.service", mid, "t1")
        await until(registry, restarted_with("hello.service", "t1"))
        second = await node.manager.main_pid("hello.service")
        assert second not in (0, first)
        # level-based: the request is done; a fleetd restart (seeded from its published
        # state) and later plans do not restart it again
        await node.crash()
        await node.start()
        await asyncio.wait_for(_until(lambda: node.agent.plans > 0, node), 20)
        assert await node.manager.main_pid("hello.service") == second
        assert (await registry.snapshot()).states[("hello.service", mid)].restarted == "t1"
        # a new request: one more restart
        await registry.request_restart("hello.service", mid, "t2")
        await until(registry, restarted_with("hello.service", "t2"))
        assert await node.manager.main_pid("hello.service") not in (0, second)


async def test_restart_request_of_a_stopped_unit_is_done_by_its_next_start(
    registry: Registry,
) -> None:
    async with cluster(registry, 1) as (node,):
        mid = node.doc.id
        await registry.create_job("hello.service", HELLO, JobState.LOADED)
        await until(
            registry, lambda s: any(st.active == "inactive" for st in state_of(s, "hello.service"))
        )
        await registry.request_restart("hello.service", mid, "t1")
        # planned with the request in view (desired loaded: it waits, nothing starts)
        seen = lambda: ("hello.service", mid) in node.agent._view.restarts  # noqa: E731
        await asyncio.wait_for(_until(seen, node), 20)
        assert (await node.manager.unit_state("hello.service")).active == "inactive"
        await registry.set_desired("hello.service", JobState.LAUNCHED)
        await until(registry, restarted_with("hello.service", "t1"))  # the start did it
        pid = await node.manager.main_pid("hello.service")
        plans = node.agent.plans
        await registry.create_job("other.service", HELLO)  # inactive: runs nowhere
        await registry.request_restart("other.service", mid, "t2")  # an event that plans again
        await asyncio.wait_for(_until(lambda: node.agent.plans > plans, node), 20)
        assert await node.manager.main_pid("hello.service") == pid  # and no restart followed


async def test_units_asked_for_while_the_bus_was_lost_start_once_it_is_back(
    registry: Registry,
) -> None:
    """The bus drops (its dbus-daemon killed), the units are asked to start meanwhile: after the
    adapter reconnects, the agent plans again (the re-sent states change nothing, yet the
    starts that failed must be retried) and every unit runs."""
    import signal

    async with cluster(registry, 1) as (node,):
        names = [f"late{i}.service" for i in range(5)]
        for name in names:
            await registry.create_job(name, HELLO, JobState.LOADED)
        await until(registry, lambda s: all(state_of(s, n) for n in names))
        out = await node.machine.run("systemctl", "--user", "show", "-p", "MainPID", "--value",
                                     "dbus.service")  # fmt: skip
        dropped = asyncio.create_task(node.manager._bus.wait_disconnected())  # type: ignore[union-attr]
        os.kill(int(out.strip()), signal.SIGKILL)
        await asyncio.wait_for(dropped, 20)
        for name in names:
            await registry.set_desired(name, JobState.LAUNCHED)
        await until(
            registry,
            lambda s: all(any(st.active == "active" for st in state_of(s, n)) for n in names),
            30,
        )


async def test_units_written_while_the_bus_was_lost_are_linked_once_it_is_back(
    registry: Registry,
) -> None:
    """New units arrive while the bus is down (its socket stopped, so nothing re-activates it):
    their files are written but cannot be linked. The agent forgets them rather than starting
    units systemd does not know (which would fail as not-found and stay so); once the bus is
    back and the adapter reconnected, it writes, links and starts them."""
    async with cluster(registry, 1) as (node,):
        dropped = asyncio.create_task(node.manager._bus.wait_disconnected())  # type: ignore[union-attr]
        # systemctl reaches systemd over its private socket, not over the bus it stops
        await node.machine.run("systemctl", "--user", "stop", "dbus.socket", "dbus.service")
        await asyncio.wait_for(dropped, 20)
        names = [f"new{i}.service" for i in range(5)]
        for name in names:
            await registry.create_job(name, HELLO, JobState.LAUNCHED)
        # every file written, and its link tried (and failed: no bus) in the same plan
        written = lambda: set(names) <= set(node.manager.units.names())  # noqa: E731
        await asyncio.wait_for(_until(written, node), 20)
        await node.machine.run("systemctl", "--user", "start", "dbus.socket")
        view = await until(
            registry,
            lambda s: all(any(st.active == "active" for st in state_of(s, n)) for n in names),
            30,
        )
    assert all(st.load == "loaded" for n in names for st in state_of(view, n))


async def test_a_slow_start_does_not_hold_back_units_placed_meanwhile(registry: Registry) -> None:
    """A unit whose start job takes long (a oneshot running 30 s) does not keep the agent from
    starting a unit placed after it: the plans go on while start jobs run."""
    slow = parse_unit("[Service]\nType=oneshot\nExecStart=/bin/sleep 30\n")
    async with cluster(registry, 1) as (node,):
        await registry.create_job("slow.service", slow, JobState.LAUNCHED)
        await until(
            registry,
            lambda s: any(st.active == "activating" for st in state_of(s, "slow.service")),
        )
        await registry.create_job("hello.service", HELLO, JobState.LAUNCHED)
        await until(
            registry,
            lambda s: any(st.active == "active" for st in state_of(s, "hello.service")),
        )
        assert (await node.manager.unit_state("slow.service")).active == "activating"
