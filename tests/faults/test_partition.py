"""A machine partitioned from etcd, with and without fencing (in process, real etcd and systemd).

Machine A reaches etcd only through a TCP proxy run by the test; machine B, the engine and the
test reach etcd directly. Cutting the proxy is the partition: A's lease can no longer be renewed,
it expires in etcd, the engine places A's unit on B. Both machines' systemd change streams are
followed: the time A's systemd reported the unit stopped (the change signal's arrival, on the
host's clock: at or after the real stop) against systemd's own record on B of when the new start
began (InactiveExitTimestamp) decides the order, conservatively.

- fencing on: A stops its unit before B starts it: 0 s running twice (asserted).
- fencing off: A runs on until the partition heals; the window both run is measured (printed).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from fleetd.model import JobState
from fleetd.registry import EtcdConfig, Registry
from fleetd.sandbox.etcd import EtcdServer
from tests.faults.harness import report
from tests.faults.inprocess import LOOP, Node, TCPProxy, first_transition
from tests.running import engine_running
from tests.waiting import until

pytestmark = pytest.mark.root

TTL = 3
UNIT = "part.service"
DEADLINE = TTL + 20.0  # a bound against hanging, not a speed goal
STOPPED = ("inactive", "failed")


@dataclass
class Setup:
    direct: Registry
    proxy: TCPProxy
    a: Node  # behind the proxy: the one to be partitioned
    b: Node


@contextlib.asynccontextmanager
async def partitionable(etcd: EtcdServer, key_prefix: str, fence: bool) -> AsyncIterator[Setup]:
    """A runs UNIT (through the proxy); then B joins (directly). The engine runs on B's side."""
    proxy = await TCPProxy(int(etcd.endpoint.rsplit(":", 1)[1])).start()
    direct_cfg = EtcdConfig(endpoints=etcd.endpoints, key_prefix=key_prefix, request_timeout=1.0)
    proxied_cfg = EtcdConfig(endpoints=[proxy.endpoint], key_prefix=key_prefix, request_timeout=1.0)
    async with Registry(direct_cfg) as direct, Registry(proxied_cfg) as proxied:
        a, b = Node("pa", proxied, TTL, "127.0.0.21"), Node("pb", direct, TTL, "127.0.0.22")
        try:
            await a.start(fence_on_lease_loss=fence)
            async with engine_running(direct, b.id, lease_ttl=TTL):
                await direct.create_job(UNIT, LOOP, JobState.LAUNCHED)
                await until(direct, lambda s: _active_on(s, a.id), DEADLINE)
                await b.start(fence_on_lease_loss=fence)
                yield Setup(direct, proxy, a, b)
        finally:
            await proxy.close()
            await asyncio.gather(a.stop(), b.stop(), return_exceptions=True)


def _active_on(snapshot, machine_id: str) -> bool:  # type: ignore[no-untyped-def]
    st = snapshot.states.get((UNIT, machine_id))
    return st is not None and st.active == "active"


async def _partition_and_wait_for_b(s: Setup) -> tuple[float, float, object, object]:
    a_changes = s.a.manager.changes(replay=False)
    b_changes = s.b.manager.changes(replay=False)
    a_stop = asyncio.ensure_future(first_transition(s.a, UNIT, STOPPED, a_changes))
    b_start = asyncio.ensure_future(first_transition(s.b, UNIT, ("active",), b_changes))
    cut = time.monotonic()
    await s.proxy.cut()
    started = await asyncio.wait_for(asyncio.shield(b_start), DEADLINE)
    return cut, started.monotonic, a_stop, (a_changes, b_changes)


async def test_partition_with_fencing_stops_before_the_unit_starts_elsewhere(
    private_etcd: EtcdServer, key_prefix: str
) -> None:
    async with partitionable(private_etcd, key_prefix, fence=True) as s:
        cut, b_started, a_stop, _ = await _partition_and_wait_for_b(s)
        stopped = await asyncio.wait_for(a_stop, DEADLINE)
        assert s.a.agent.fenced
        a_inactive = stopped.realtime  # A's unit may be unloaded since: its own record is gone
        b_began = await s.b.timestamp(UNIT, "InactiveExitTimestamp")
        overlap = b_began < a_inactive or b_started < stopped.monotonic
        assert not overlap, "the unit ran on both machines"
        # A is still cut off and keeps nothing running
        assert (await s.a.manager.unit_state(UNIT)).active in STOPPED
        report(
            "partition, fencing on",
            f"A stopped its unit {stopped.monotonic - cut:.2f} s after the cut, B started it "
            f"{b_started - cut:.2f} s after the cut; gap between A's stop and B's start "
            f"{b_began - a_inactive:.2f} s (A's stop signal vs B's systemd start time); 0 s running twice",
        )


async def test_partition_without_fencing_measures_the_double_running_window(
    private_etcd: EtcdServer, key_prefix: str
) -> None:
    async with partitionable(private_etcd, key_prefix, fence=False) as s:
        cut, b_started, a_stop, _ = await _partition_and_wait_for_b(s)
        assert not a_stop.done() and (await s.a.manager.unit_state(UNIT)).active == "active"
        healed = time.monotonic()
        await s.proxy.heal()  # A gets back to etcd: its lease is gone, the unit is B's now
        stopped = await asyncio.wait_for(a_stop, DEADLINE + 30)  # gRPC reconnect backoff
        a_inactive = stopped.realtime  # A's unit is unloaded now: its own record is gone
        b_began = await s.b.timestamp(UNIT, "InactiveExitTimestamp")
        assert a_inactive > b_began  # without fencing it did run twice
        await until(
            s.direct,
            lambda snap: _active_on(snap, s.b.id) and (UNIT, s.a.id) not in snap.states,
            DEADLINE,
        )
        report(
            "partition, fencing off",
            f"B started the unit {b_started - cut:.2f} s after the cut; the partition was healed "
            f"{healed - cut:.2f} s after the cut and A stopped its copy {stopped.monotonic - healed:.2f} s "
            f"later: ran twice for {a_inactive - b_began:.2f} s (A's stop signal vs B's systemd start time) = the "
            "partition's length past the lease expiry + A's reconnect",
        )
