"""The agent's side of rolling updates, against a real etcd and real namespaced systemd machines
(root only): a rollout pins an instance to a version, and the agent judges and publishes the
health of the instance a rollout is updating. The rollout documents are written to etcd as the
engine leader would (raw puts), so only the agent's behaviour is under test."""

from __future__ import annotations

import asyncio

import pytest

from fleetd.model import (
    Job,
    JobState,
    Phase,
    Policy,
    Rollout,
    RolloutAction,
    RolloutState,
    Target,
    UnitContent,
    UnitState,
)
from fleetd.registry import Changed, KeyKind, Registry
from fleetd.unit import UnitFile, parse_unit
from tests.agent.test_agent_shell import _until, cluster, state_of
from tests.waiting import until

pytestmark = pytest.mark.root

WEB = "web@1.service"
V1 = parse_unit("[Service]\nExecStart=/bin/sleep infinity\n")
V2 = parse_unit(
    '[Service]\nEnvironment="GREETING=hello world" PORT=80%i\nExecStart=/bin/sleep 1000000\n'
)
BROKEN = parse_unit("[Service]\nExecStart=/bin/false\n")


def rollout(
    to: UnitFile, phase: Phase, machine: str, *, frm: UnitFile = V1, action=RolloutAction.UPDATE,
    **policy,
) -> Rollout:  # fmt: skip
    """The rollout of web@.service from `frm` to `to`, its one instance on `machine` at
    `phase`, with short spans. Paused: the cluster's engine leader takes no step of its own
    (it would start the pending instance); the test moves it on."""
    spans = {"min_healthy": 1.0, "deadline": 20.0, **policy}
    return Rollout("web@.service", "r1", action, frm.hash, to.hash, Policy(**spans),
                   (Target(WEB, machine, phase),), RolloutState.PAUSED,
                   started=1.0)  # fmt: skip


async def write_rollout(registry: Registry, doc: Rollout) -> None:
    await registry.etcd.put(registry.keys.rollout(doc.name), doc.encode())


async def new_version(registry: Registry, unit: UnitFile) -> None:
    """The job now says `unit` (as a rollout's start leaves it), its previous content kept."""
    await registry.etcd.put(registry.keys.unit(unit.hash), UnitContent(unit).encode())
    await registry.etcd.put(registry.keys.job(WEB), Job(WEB, unit.hash, JobState.LAUNCHED).encode())


def published(**expected):
    """The machine published web@1's state with these fields."""
    return lambda s: any(
        all(getattr(st, k) == v for k, v in expected.items()) for st in state_of(s, WEB)
    )


def planned_with(node, unit: UnitFile):  # type: ignore[no-untyped-def]
    """The agent has applied a plan made with the job on `unit` in its view: the view has it,
    no plan is asked for (the event's was made since it was folded) and none is under way."""
    agent = node.agent
    return lambda: (
        agent._view.jobs[WEB].unit_hash == unit.hash
        and not agent._dirty.is_set()
        and not agent._acting.locked()
    )


def health_of(snapshot):
    (st,) = state_of(snapshot, WEB)
    return st


async def running_v1(registry: Registry, node) -> int:  # type: ignore[no-untyped-def]
    await registry.create_job(WEB, V1, JobState.LAUNCHED)
    await until(registry, published(hash=V1.hash, active="active"))
    return await node.manager.main_pid(WEB)


async def test_a_pinned_instance_keeps_its_version_until_it_is_updated_then_is_healthy(
    registry: Registry,
) -> None:
    async with cluster(registry, 1) as (node,):
        me = node.doc.id
        pid = await running_v1(registry, node)
        # the rollout begins: this instance pending, the job already on the new version
        await write_rollout(registry, rollout(V2, Phase.PENDING, me))
        await new_version(registry, V2)
        await asyncio.wait_for(_until(planned_with(node, V2), node), 20)
        assert await node.manager.main_pid(WEB) == pid  # not restarted: still the old version
        assert health_of(await registry.snapshot()).hash == V1.hash
        # its turn: it runs the new version, judged healthy after the minimum healthy time,
        # its check run with the unit's Environment= and fleet's variables
        check = (
            'test "$GREETING" = "hello world" && test "$PORT" = 801 '
            f'&& test "$FLEET_UNIT" = {WEB} && test "$FLEET_MACHINE_ID" = {me}'
        )
        await write_rollout(registry, rollout(V2, Phase.UPDATING, me, health_check=check))
        snap = await until(registry, published(hash=V2.hash, gate="r1", health="healthy"))
        assert health_of(snap).health_reason.startswith("active for 1s without a restart")
        assert await node.manager.main_pid(WEB) not in (0, pid)
        # the rollout moves on (the instance healthy, no gate any more): the verdict stays
        await write_rollout(registry, rollout(V2, Phase.HEALTHY, me))
        await asyncio.wait_for(_until(lambda: not node.agent._health._judges, node), 20)
        assert health_of(await registry.snapshot()).health == "healthy"


async def first_published(registry: Registry, revision: int, **expected) -> UnitState:
    """The first state of web@1 published with these fields, event by event from `revision` on:
    the engine may revert it at once, and a folded view can skip a state a later one of the
    same watch batch replaced."""

    async def scan() -> UnitState:
        async with registry.watch(revision + 1) as events:
            async for e in events:
                if (
                    isinstance(e, Changed)
                    and e.kind is KeyKind.STATE
                    and e.doc.name == WEB
                    and all(getattr(e.doc, k) == v for k, v in expected.items())
                ):
                    return e.doc
        raise AssertionError("the watch ended")

    return await asyncio.wait_for(scan(), 20)


async def test_an_instance_that_fails_is_unhealthy_in_systemds_words(registry: Registry) -> None:
    async with cluster(registry, 1) as (node,):
        await running_v1(registry, node)
        before = (await registry.snapshot()).revision
        await write_rollout(registry, rollout(BROKEN, Phase.UPDATING, node.doc.id))
        await new_version(registry, BROKEN)
        state = await first_published(registry, before, hash=BROKEN.hash, health="unhealthy")
        assert state.health_reason == (
            "failed (Result=exit-code): ExecStart=/bin/false (code=exited, status=1/FAILURE)"
        )


async def test_a_failing_health_check_is_checking_then_unhealthy_at_the_deadline(
    registry: Registry,
) -> None:
    async with cluster(registry, 1) as (node,):
        await running_v1(registry, node)
        check = "echo not ready yet; exit 7"
        await write_rollout(
            registry, rollout(V2, Phase.UPDATING, node.doc.id, health_check=check, deadline=3.0)
        )
        await new_version(registry, V2)
        said = f"health check `{check}` exited 7: not ready yet"
        await until(registry, published(hash=V2.hash, health="checking", health_reason=said))
        await until(
            registry,
            published(health="unhealthy", health_reason=f"not healthy within 3s: {said}"),
        )


async def test_a_restart_rollouts_gate_waits_for_the_restart(registry: Registry) -> None:
    async with cluster(registry, 1) as (node,):
        me = node.doc.id
        pid = await running_v1(registry, node)
        await write_rollout(
            registry, rollout(V1, Phase.UPDATING, me, action=RolloutAction.RESTART, min_healthy=0.5)
        )
        await until(
            registry,
            published(gate="r1", health="checking", health_reason="waiting for its restart"),
        )
        assert await node.manager.main_pid(WEB) == pid
        # the engine asks the restart with the rollout's id as its token
        await registry.request_restart(WEB, me, "r1")
        snap = await until(registry, published(restarted="r1", health="healthy"))
        assert health_of(snap).hash == V1.hash
        assert await node.manager.main_pid(WEB) not in (0, pid)
