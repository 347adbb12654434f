"""etcd restarts under a running cluster: no job lost, no machine lost, watches resume.

Real 3-machine sandbox (agent_ttl 3 s). The sandbox's etcd is stopped with SIGTERM (its PID from
sandbox.json) and started again on the same data dir and ports; sandbox.json then names the new
PID, so `fleetd sandbox down` stops it.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import pytest

from fleetd.model import JobState
from fleetd.registry import Event, KeyKind
from fleetd.sandbox.etcd import EtcdServer
from tests.faults.harness import (
    SLACK,
    Cluster,
    local_units,
    moves_of,
    placed_on,
    report,
    signal_and_wait,
    start_units,
)
from tests.waiting import gone, put, retrying

pytestmark = pytest.mark.root

AGENT_TTL = 3.0  # the sandbox of `cluster` runs with it (tests/faults/harness.py)


def _restart_etcd(cluster: Cluster) -> float:
    """SIGTERM the sandbox's etcd, wait for its exit, start it again; seconds it was down."""
    state = cluster.state
    down = signal_and_wait(state.etcd_pid, signal.SIGTERM)
    started = time.monotonic()
    server = EtcdServer(
        cluster.dir / "etcd",
        client_port=state.etcd_port,
        peer_port=state.etcd_peer_port,
        detached=True,
    )
    server.start()
    state.etcd_pid = server.pid or 0
    state.save()
    return down + time.monotonic() - started


async def test_etcd_restart_loses_nothing_and_watches_resume(cluster: Cluster) -> None:
    names = [cluster.write_unit(f"etcd-before-{i}.service") for i in (1, 2, 3)]
    after = cluster.write_unit("etcd-after.service")
    async with cluster.registry() as registry:
        before = await start_units(cluster, registry, names)
        processes = {
            n: cluster.unit_process(cluster.by_id(placed_on(before, n) or "").name, n)
            for n in names
        }
        # this test's own watch is established before the restart and must carry on after it
        events: list[object] = []
        async with registry.watch(before.revision + 1) as stream:
            cluster.fleetctl("m2", "submit", after)
            async for event in stream:
                events.append(event)
                if put(KeyKind.JOB, after)(event):
                    break
            down_s = await asyncio.to_thread(_restart_etcd, cluster)
            started = time.monotonic()
            # Started through the registry, retrying only while etcd is unavailable (a temporary
            # error, STYLE.md §7): right after etcd is healthy again, a gRPC channel may still be
            # in its reconnect backoff, and fleetd's API then answers "unable to communicate with
            # etcd" for a moment (docs/reliability.md).
            await retrying(lambda: registry.set_desired(after, JobState.LAUNCHED))
            runs = _active_anywhere(after)

            async def until_it_runs() -> None:
                async for event in stream:
                    events.append(event)
                    if runs(event):
                        return

            await asyncio.wait_for(until_it_runs(), AGENT_TTL + SLACK)
            run_s = time.monotonic() - started

        view = await registry.snapshot()
        assert set(before.jobs) <= set(view.jobs), "a job was lost"
        assert set(view.machines) == set(before.machines), "a machine was lost"
        assert moves_of(events, set(names)) == []
        assert not [e for e in events if gone(KeyKind.MACHINE)(e)]
        for name in names:
            machine = placed_on(view, name)
            assert machine == placed_on(before, name)
            assert cluster.unit_process(cluster.by_id(machine).name, name) == processes[name]
        assert len(local_units(view, placed_on(view, after) or "")) >= 1
    report(
        "etcd SIGTERM + restart",
        f"etcd down {down_s:.2f}s; 0 jobs/machines lost, 0 unit restarts; a unit started "
        f"afterwards (through etcd) ran after {run_s:.2f}s",
    )


def _active_anywhere(unit: str) -> Callable[[Event], bool]:
    def check(event: Event) -> bool:
        return (
            put(KeyKind.STATE)(event)
            and event.ident[0] == unit
            and (  # type: ignore[union-attr]
                event.doc.active == "active"  # type: ignore[union-attr]
            )
        )

    return check
