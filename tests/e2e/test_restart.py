"""`fleetctl restart` of a Global unit, end to end: the real `fleetctl` against a real sandbox of
three machines (etcd + namespaced systemd machines each running fleetd).

A rolling restart must give the unit a new main process on every machine, one machine at a
time: checked with `systemctl show` inside each machine, and over the whole sequence of unit
states the agents published (the registry's watch, from before the command to the last
machine's answer), never by sampling.
"""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from fleetd.model import UnitState
from fleetd.registry import Changed, Event, KeyKind, Registry, Snapshot
from tests.faults.harness import SLACK, Cluster, UnitProcess, collect_until
from tests.waiting import until

pytestmark = pytest.mark.root

UNIT = "rolling.service"
FAIL_FLAG = "/run/rolling-restart-must-fail"  # each machine has its own /run
# The stop and the start each take a moment (ExecStop/ExecStartPre), so a machine's agent
# publishes the unit down (deactivating, activating) while it restarts there.
ROLLING = f"""[Unit]
Description=rolling restart probe

[Service]
ExecStartPre=/bin/sh -c 'test ! -e {FAIL_FLAG}'
ExecStartPre=/bin/sleep 0.3
ExecStart=/bin/sh -c 'while true; do sleep 1; done'
ExecStop=/bin/sleep 0.3

[X-Fleet]
Global=true
UpdateMinHealthyTime=1s
"""


@pytest.fixture(scope="module")
def cluster(cluster: Cluster) -> Cluster:
    """The module's sandbox (tests/faults/harness.py: 3 machines, agent_ttl 3 s), running UNIT
    on every machine."""
    cluster.write_unit(UNIT, ROLLING)
    cluster.fleetctl("m1", "start", UNIT)
    return cluster


def machine_ids(cluster: Cluster) -> list[str]:
    return sorted(r.id for r in cluster.state.machines)


def active_everywhere(ids: list[str]):
    def check(snapshot: Snapshot) -> bool:
        return all(
            (s := snapshot.states.get((UNIT, m))) is not None and s.active == "active" for m in ids
        )

    return check


def processes(cluster: Cluster) -> dict[str, UnitProcess]:
    return {r.id: cluster.unit_process(r.name, UNIT) for r in cluster.state.machines}


async def running(cluster: Cluster, registry: Registry) -> Snapshot:
    """The registry once every machine reports the unit active, and no restart of it (a
    health-gated restart rollout, docs/rolling-updates.md) is still going on."""
    everywhere = active_everywhere(machine_ids(cluster))

    def settled(snapshot: Snapshot) -> bool:
        rollout = snapshot.rollouts.get(UNIT)
        return everywhere(snapshot) and (rollout is None or rollout.state.finished)

    return await until(registry, settled, SLACK + 10)


async def restart_watched(
    cluster: Cluster, registry: Registry, *args: str
) -> tuple[Snapshot, list[UnitState], subprocess.CompletedProcess[str]]:
    """Run `fleetctl restart ARGS UNIT`; the registry before it, every state of the unit
    published from then until each machine reported its restart done, and the command."""
    before = await running(cluster, registry)
    done = await asyncio.to_thread(cluster.fleetctl, "m1", "restart", *args, UNIT, check=False)
    after = await registry.snapshot()
    final = {m: s.restarted for (n, m), s in after.states.items() if n == UNIT}
    reported: set[str] = set()

    expected = {m for m, t in final.items() if t and t != token_of(before, m)}

    def last(event: Event) -> bool:
        """The last machine's answer: every machine restarted published its final token."""
        state = _unit_state(event)
        if (
            state is not None
            and state.restarted == final.get(state.machine_id)
            and state.active not in ("activating", "deactivating")
        ):
            reported.add(state.machine_id)
        return reported >= expected

    events = await collect_until(registry, before.revision + 1, last, SLACK + 10)
    states = [s for s in map(_unit_state, events) if s is not None]
    return before, states, done


def _unit_state(event: Event) -> UnitState | None:
    """The state of UNIT an event publishes, if it publishes one."""
    if isinstance(event, Changed) and event.kind is KeyKind.STATE and event.doc.name == UNIT:
        return event.doc
    return None


def token_of(snapshot: Snapshot, machine_id: str) -> str:
    state = snapshot.states.get((UNIT, machine_id))
    return state.restarted if state is not None else ""


def fold(before: Snapshot, states: list[UnitState], ids: list[str]) -> list[dict[str, str]]:
    """Each machine's ActiveState after each published state, in order."""
    current = {m: before.states[(UNIT, m)].active for m in ids}
    seen = []
    for state in states:
        current[state.machine_id] = state.active
        seen.append(dict(current))
    return seen


async def test_rolling_restart_one_machine_at_a_time(cluster: Cluster) -> None:
    ids = machine_ids(cluster)
    legends = {r.id: r.legend for r in cluster.state.machines}
    async with cluster.registry() as registry:
        await running(cluster, registry)
        pids = processes(cluster)
        before, states, done = await restart_watched(cluster, registry)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"Unit {UNIT} restarted on {legends[m]}" for m in ids]
    # a new main process on every machine
    after = processes(cluster)
    for m in ids:
        assert after[m].active == "active"
        assert after[m].main_pid not in (0, pids[m].main_pid), m
        assert after[m].invocation != pids[m].invocation, m
    # never more than one machine down, over every state published meanwhile
    sequence = fold(before, states, ids)
    downs = [s.active for s in states if s.active != "active"]
    print(f"\nstates published during the rolling restart: {len(states)}, down: {downs}")
    assert downs, "no machine was ever seen down: the sequence proves nothing"
    for step in sequence:
        assert sum(active != "active" for active in step.values()) <= 1, sequence
    # machine after machine: a machine goes down only once the ones before it are back
    order = []
    for state in states:
        if state.active != "active" and state.machine_id not in order:
            order.append(state.machine_id)
    assert order == ids[: len(order)]


async def test_no_block_requests_every_machine_and_prints_one_line(cluster: Cluster) -> None:
    ids = machine_ids(cluster)
    async with cluster.registry() as registry:
        before = await running(cluster, registry)
        pids = processes(cluster)
        done = await asyncio.to_thread(cluster.fleetctl, "m1", "restart", "--no-block", UNIT)
        assert done.stdout == f"Triggered global unit {UNIT} restart\n"

        def all_restarted(snapshot: Snapshot) -> bool:
            return active_everywhere(ids)(snapshot) and all(
                token_of(snapshot, m) not in ("", token_of(before, m)) for m in ids
            )

        await until(registry, all_restarted, SLACK + 10)
    after = processes(cluster)
    for m in ids:
        assert after[m].main_pid not in (0, pids[m].main_pid), m


async def test_a_machine_where_it_fails_stops_the_rolling_restart(cluster: Cluster) -> None:
    ids = machine_ids(cluster)
    records = {r.id: r for r in cluster.state.machines}
    first, failing, untouched = ids
    async with cluster.registry() as registry:
        await running(cluster, registry)
        pids = processes(cluster)
        assert cluster.run_in(records[failing].name, "touch", FAIL_FLAG).returncode == 0
        try:
            done = await asyncio.to_thread(cluster.fleetctl, "m1", "restart", UNIT, check=False)
        finally:
            cluster.run_in(records[failing].name, "rm", "-f", FAIL_FLAG)
    assert done.returncode != 0
    assert done.stdout == f"Unit {UNIT} restarted on {records[first].legend}\n"
    why = (  # what the machine's health gate said
        f"failed (Result=exit-code): ExecStartPre=/bin/sh -c test ! -e {FAIL_FLAG} "
        "(code=exited, status=1/FAILURE)"
    )
    err = done.stderr.splitlines()
    # systemd's words, the unit's journal on that machine, then what was done and not done
    assert err[0] == f"{UNIT}: {why}", done.stderr
    assert err[1] == f"{UNIT}: last 10 journal lines on {failing[:8]}:", done.stderr
    assert err[-2:] == [
        f"Error restarting unit {UNIT} on {records[failing].legend}: {why}",
        f"Unit {UNIT} was not restarted on {records[untouched].legend} "
        "(stopped at the first failure)",
    ]
    after = processes(cluster)
    assert after[first].invocation != pids[first].invocation
    assert after[failing].active == "failed"
    assert after[untouched] == pids[untouched]  # never touched: same process, same invocation
