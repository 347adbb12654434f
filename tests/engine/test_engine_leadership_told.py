"""The engine tells whoever asked (the daemon's STATUS= for `systemctl status fleet`) when it
starts and stops leading, against a real etcd: no one polls `is_leader`; and a shutdown's cancel
ends it whenever it lands."""

from __future__ import annotations

import asyncio

import pytest

from fleetd.engine import Engine, _shield
from fleetd.registry import EtcdConfig, Registry
from tests.running import cancelled, running

M1, M2 = "1" * 32, "2" * 32
DEADLINE = 10.0


async def test_each_engine_is_told_when_it_leads_and_when_it_stops(
    etcd_config: EtcdConfig,
) -> None:
    told: dict[str, list[bool]] = {M1: [], M2: []}
    async with Registry(etcd_config) as r1, Registry(etcd_config) as r2:
        e1 = Engine(r1, M1, lease_ttl=2, on_leadership=told[M1].append)
        e2 = Engine(r2, M2, lease_ttl=2, on_leadership=told[M2].append)
        async with running(e1.run()) as t1:
            await asyncio.wait_for(e1.is_leader.wait(), DEADLINE)
            async with running(e2.run()):
                assert told == {M1: [True], M2: []}
                await cancelled(t1)  # e1 stops (its lease runs out), e2 takes over
                assert told == {M1: [True, False], M2: []}
                await asyncio.wait_for(e2.is_leader.wait(), DEADLINE)
                assert told == {M1: [True, False], M2: [True]}
            assert told == {M1: [True, False], M2: [True, False]}


async def test_a_cancel_during_the_clean_up_after_stepping_down_still_ends_the_engine() -> None:
    """The engine's loop releases its lease in a shielded step after each term; a shutdown's
    cancel landing in that step (right after `resign()` made it step down) must end the task,
    not be swallowed while the loop campaigns again."""
    in_step, finish = asyncio.Event(), asyncio.Event()
    steps = 0

    async def clean_up() -> None:
        nonlocal steps
        steps += 1
        in_step.set()
        await finish.wait()
        await asyncio.sleep(0)  # a real step (an etcd call) yields to the loop

    async def terms() -> None:  # the shape of Engine.run: a term, then its clean-up, again
        while True:
            await _shield(clean_up())

    task = asyncio.create_task(terms())
    await asyncio.wait_for(in_step.wait(), DEADLINE)
    task.cancel()
    finish.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, DEADLINE)
    assert steps == 1  # the step was finished, and no other began
