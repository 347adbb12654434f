"""A registry written by a fleetd that kept no agents' copies (the previous key layout): its
agents wait — units running on their machines are left alone —, the engine leader copies every
placement and Global job once, and the agents go on. Real etcd, real namespaced systemd (root
only)."""

from __future__ import annotations

import pytest

from fleetd.model import Assignment, GlobalJob, JobState
from fleetd.registry import Registry
from fleetd.registry.keys import KeyKind
from fleetd.unit import parse_unit
from tests.faults.inprocess import Node
from tests.running import engine_running
from tests.waiting import until

pytestmark = pytest.mark.root

HELLO = parse_unit("[Service]\nExecStart=/bin/sh -c 'while true; do sleep 1; done'\n")
EVERYWHERE = parse_unit(
    "[Service]\nExecStart=/bin/sh -c 'while true; do sleep 1; done'\n[X-Fleet]\nGlobal=true\n"
)
NAMES = ("hello.service", "everywhere.service")


def running(snapshot, machine: str) -> bool:
    return all(
        (state := snapshot.states.get((name, machine))) is not None and state.active == "active"
        for name in NAMES
    )


async def forget_the_copies(registry: Registry) -> None:
    """What a fleetd of the previous layout left: jobs and placements, no copy and no mark."""
    for kind in (KeyKind.PLACED, KeyKind.GLOBAL, KeyKind.LAYOUT):
        await registry.etcd.delete(registry.keys.of_kind(kind), prefix=True)


async def test_the_previous_layout_is_copied_once_and_running_units_are_left_alone(
    registry: Registry,
) -> None:
    node = Node("mig", registry, 5, "127.0.0.21")
    try:
        await registry.create_job("hello.service", HELLO, JobState.LAUNCHED)
        await registry.create_job("everywhere.service", EVERYWHERE, JobState.LAUNCHED)
        await node.start()
        async with engine_running(registry, node.id):
            await until(registry, lambda s: running(s, node.id))
        started = {name: await node.timestamp(name, "ActiveEnterTimestamp") for name in NAMES}

        # fleetd restarts on a registry of the previous layout: the agent adopts the running
        # units and waits for the copies instead of taking an empty range for "run nothing"
        await node.crash()
        await forget_the_copies(registry)
        old = await registry.snapshot()
        assert not old.assignments and not old.global_jobs and not old.marks
        assert old.placements == {"hello.service": node.id}
        await node.start()
        async with engine_running(registry, node.id):
            # a unit submitted afterwards runs: the agent has followed its range since
            await registry.create_job("after.service", HELLO, JobState.LAUNCHED)
            done = await until(
                registry,
                lambda s: (
                    bool(s.marks)
                    and running(s, node.id)
                    and (state := s.states.get(("after.service", node.id))) is not None
                    and state.active == "active"
                ),
            )
        assert done.assignments == {
            (node.id, name): Assignment(name, node.id, HELLO.hash, JobState.LAUNCHED)
            for name in ("hello.service", "after.service")
        }
        assert dict(done.global_jobs) == {
            "everywhere.service": GlobalJob(
                "everywhere.service", EVERYWHERE.hash, JobState.LAUNCHED
            )
        }
        assert done.marks["index"].machine_id == node.id
        for name in NAMES:  # never stopped nor restarted
            assert await node.timestamp(name, "ActiveEnterTimestamp") == started[name]
    finally:
        await node.stop()
