"""Typed watch events: list-then-watch, corrupt values, kill -9 of etcd, compaction."""

from __future__ import annotations

import asyncio

import pytest
from registry_helpers import next_matching, retrying, state, take, unit

from fleetd.model import JobState, Machine
from fleetd.registry import (
    Changed,
    ClusterView,
    EtcdConfig,
    Event,
    KeyKind,
    Registry,
    Removed,
    Resync,
)
from fleetd.sandbox.etcd import EtcdServer
from tests.waiting import gone, put

JOB, UNIT, SCHEDULE, MACHINE, STATE = (
    KeyKind.JOB, KeyKind.UNIT, KeyKind.SCHEDULE, KeyKind.MACHINE, KeyKind.STATE
)  # fmt: skip


def shape(event: Event) -> tuple[str, KeyKind]:
    """("put" or "delete", the key's kind) of a Changed or Removed event."""
    assert isinstance(event, Changed | Removed), event
    return ("put" if isinstance(event, Changed) else "delete", event.kind)


async def test_watch_yields_typed_events_in_revision_order(registry: Registry) -> None:
    snap = await registry.snapshot()
    async with registry.watch(snap.revision + 1) as events:
        await registry.create_job("a.service", unit())
        await registry.set_desired("a.service", JobState.LAUNCHED)
        assert await registry.schedule("a.service", "m1")
        lease = await registry.register_machine(Machine("m1", "10.0.0.1"), ttl=10)
        await registry.publish_state(state("a.service", "m1"), lease)
        await registry.remove_state("a.service", "m1")
        assert await registry.unschedule("a.service", "m1")
        await registry.destroy("a.service")
        got = await take(events, 10)
        await lease.revoke()
        down, _ = await next_matching(events, gone(MACHINE))
    kinds = [shape(e) for e in got]
    assert sorted(kinds[:2]) == [("put", JOB), ("put", UNIT)]
    assert kinds[2:8] == [
        ("put", JOB),
        ("put", SCHEDULE),
        ("put", MACHINE),
        ("put", STATE),
        ("delete", STATE),
        ("delete", SCHEDULE),
    ]
    assert sorted(kinds[8:]) == [("delete", JOB), ("delete", UNIT)]
    assert got[2].doc.desired is JobState.LAUNCHED
    assert got[4].doc.public_ip == "10.0.0.1"
    revisions = [e.revision for e in got]
    assert revisions == sorted(revisions) and revisions[0] > snap.revision
    assert got[-1].revision == got[-2].revision  # destroy is one txn: one revision
    assert down.ident == "m1"


async def test_snapshot_plus_events_equals_a_later_snapshot(registry: Registry) -> None:
    await registry.create_job("a.service", unit("a"))
    view = ClusterView(await registry.snapshot())
    async with registry.watch(view.revision + 1) as events:
        await registry.create_job("b.service", unit("b"))
        await registry.schedule("b.service", "m1")
        await registry.destroy("a.service")
        await registry.create_job("sentinel.service", unit("b"))
        async for event in events:
            view.apply(event)
            if put(JOB, "sentinel.service")(event):
                break
    after = await registry.snapshot()
    assert (view.jobs, view.units, view.placements) == (after.jobs, after.units, after.placements)


async def test_corrupt_value_is_logged_and_skipped(registry: Registry, capsys) -> None:
    await registry.create_job("good.service", unit())
    await registry.etcd.put(registry.keys.job("bad.service"), b"{not json")
    await registry.etcd.put(registry.keys.machine("m9"), b'{"v": 1, "id": 7}')
    snap = await registry.snapshot()  # does not raise; skips the bad ones
    assert set(snap.jobs) == {"good.service"} and snap.machines == {}
    async with registry.watch(snap.revision + 1) as events:
        await registry.etcd.put(registry.keys.job("bad2.service"), b"\xff\xfe garbage")
        await registry.etcd.put(registry.keys.job("other.service"), unit_job("bad3.service"))
        await registry.create_job("next.service", unit())
        event, seen = await next_matching(events, put(JOB))
    # the corrupt ones never surface; the shared content is written again with the job (so a
    # concurrent destroy sees it gained a user), in the same revision
    assert event.ident == "next.service"
    assert [shape(e) for e in seen] == [("put", UNIT), ("put", JOB)]
    assert seen[0].revision == event.revision
    out = capsys.readouterr().out
    assert out.count("registry.corrupt_value") >= 4
    assert "bad.service" in out and "bad2.service" in out


def unit_job(name: str) -> bytes:
    from fleetd.model import Job

    return Job(name, unit().hash).encode()


async def test_watch_survives_kill_9_and_restart(private_etcd: EtcdServer, key_prefix) -> None:
    """A writer's N numbered jobs all arrive exactly once, in order, across a crash of etcd.

    The writer keeps writing through the crash (retrying; create_job is idempotent, so a write
    whose answer was lost is not doubled) and the watcher is killed mid-stream.
    """
    config = EtcdConfig(private_etcd.endpoints, key_prefix=key_prefix, request_timeout=2.0)
    n = 80
    names = [f"n-{i:03d}.service" for i in range(n)]
    async with Registry(config) as reg, Registry(config) as writer:
        snap = await reg.snapshot()

        async def write_all() -> None:
            for name in names:
                await retrying(lambda name=name: writer.create_job(name, unit()), 30)

        received: list[str] = []
        async with reg.watch(snap.revision + 1) as events:
            task = asyncio.create_task(write_all())
            try:
                async with asyncio.timeout(60):
                    async for event in events:
                        if put(JOB)(event):
                            received.append(event.ident)
                        if len(received) == 20:
                            await asyncio.to_thread(private_etcd.kill)
                            await asyncio.to_thread(private_etcd.start)
                        if len(received) == n:
                            break
                await task
                await writer.create_job("sentinel.service", unit())
                event, seen = await next_matching(events, put(JOB))
            finally:
                task.cancel()
            assert events.reconnects >= 1
    assert received == names  # every one, once, in order
    # nothing doubled after: the sentinel's txn only (its shared content is written again)
    assert event.ident == "sentinel.service"
    assert [(shape(e), e.revision) for e in seen] == [
        (("put", UNIT), event.revision), (("put", JOB), event.revision)]  # fmt: skip


async def test_compaction_while_behind_relists(private_etcd: EtcdServer, key_prefix) -> None:
    config = EtcdConfig(private_etcd.endpoints, key_prefix=key_prefix)
    async with Registry(config) as reg:
        await reg.create_job("a.service", unit("a"))
        view = ClusterView(await reg.snapshot())
        # The watcher is behind: these happen before it reads anything.
        await reg.create_job("b.service", unit("b"))
        await reg.destroy("a.service")
        await reg.create_job("c.service", unit("c"))
        await reg.schedule("c.service", "m1")
        await reg.compact()
        async with reg.watch(view.revision + 1) as events:
            first = await take(events, 1)
            assert isinstance(first[0], Resync)
            view.apply(first[0])
            assert set(view.jobs) == {"b.service", "c.service"}  # consistent, not half-applied
            await reg.create_job("d.service", unit("d"))
            event, seen = await next_matching(events, put(JOB))
            for e in seen:
                view.apply(e)
            assert events.resyncs == 1
        after = await reg.snapshot()
    assert event.ident == "d.service"
    assert (view.jobs, view.units, view.placements) == (after.jobs, after.units, after.placements)


async def test_compaction_during_a_disconnect_relists(private_etcd: EtcdServer, key_prefix) -> None:
    """A live watcher loses its stream; while it is away history is compacted past it."""
    config = EtcdConfig(private_etcd.endpoints, key_prefix=key_prefix, request_timeout=2.0)
    async with Registry(config) as reg, Registry(config) as writer:
        view = ClusterView(await reg.snapshot())
        async with reg.watch(view.revision + 1) as events:
            await writer.create_job("a.service", unit("a"))
            got = await take(events, 2)
            for e in got:
                view.apply(e)
            await asyncio.to_thread(private_etcd.kill)
            await asyncio.to_thread(private_etcd.start)
            await retrying(lambda: writer.create_job("b.service", unit("b")))
            await retrying(lambda: writer.destroy("a.service"))
            await retrying(lambda: writer.compact())
            await retrying(lambda: writer.create_job("c.service", unit("c")))
            async for event in events:
                view.apply(event)
                if "c.service" in view.jobs:
                    break
        after = await reg.snapshot()
    assert set(view.jobs) == {"b.service", "c.service"}
    assert (view.jobs, view.units) == (after.jobs, after.units)


async def test_slow_consumer_reads_at_its_own_pace(registry: Registry) -> None:
    """Pull-based: 300 writes with nobody reading, then all of them, in order."""
    snap = await registry.snapshot()
    async with registry.watch(snap.revision + 1) as events:
        await registry.create_job("s.service", unit())
        await take(events, 2)  # stream established
        await asyncio.gather(*(registry.schedule("s.service", f"m{i}", None) for i in range(1)))
        for i in range(1, 300):
            await registry.schedule("s.service", f"m{i}", expected=f"m{i - 1}")
        got = await take(events, 300)
    assert [e.doc.machine_id for e in got] == [f"m{i}" for i in range(300)]
    assert all(shape(e) == ("put", SCHEDULE) for e in got)


async def test_a_watcher_far_behind_gets_answers_larger_than_a_grpc_message(
    registry: Registry,
) -> None:
    """A watch from far back is answered up to 1,000 revisions at a time: with 100 keys a txn
    that is more than gRPC's 4 MiB message. etcd fragments the answer and the stream joins the
    fragments: every event comes, and the stream never had to resume."""
    from fleetd.registry.kv import Put  # the adapter's own values: this test writes raw

    start = (await registry.snapshot()).revision
    payload = Machine("m" * 32, "10.0.0.1", {"pad": "x" * 400}).encode()
    for txn in range(120):  # 12,000 keys of ~0.5 KB: ~6 MB of history
        puts = [Put(registry.keys.machine(f"{txn:016x}{i:016x}"), b"") for i in range(100)]
        await registry.etcd.txn([], [Put(p.key, payload.replace(b"m" * 32, p.key[-32:].encode()))
                                     for p in puts])  # fmt: skip
    async with registry.watch(start + 1) as events:
        seen = await take(events, 12_000, deadline=60)
        assert events.reconnects == 0
    assert len({e.ident for e in seen}) == 12_000


def _watch_gauges(server: EtcdServer) -> tuple[int, int]:
    """(gRPC watch streams, watchers) etcd counts now, from its metrics."""
    import re
    import urllib.request

    with urllib.request.urlopen(f"{server.client_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found = dict(re.findall(r"^etcd_debugging_mvcc_(watch_stream|watcher)_total (\S+)$", text, re.M))
    return int(float(found["watch_stream"])), int(float(found["watcher"]))


async def test_the_watches_of_a_process_share_one_stream_and_decode_once(
    private_etcd: EtcdServer, key_prefix: str
) -> None:
    """Every watch of one client (the engine's whole prefix, an agent's ranges, a wait's)
    is an etcd watcher on one gRPC stream; a change several of them get is decoded once (the
    very same event); one that leaves is cancelled on the stream, the others go on."""
    config = EtcdConfig(endpoints=private_etcd.endpoints, key_prefix=key_prefix)
    async with Registry(config) as registry:
        start = (await registry.snapshot()).revision + 1
        whole = registry.watch(start)
        ranged = registry.watch(start, ranges=[(registry.keys.of_kind(JOB), True),
                                               (registry.keys.of_kind(SCHEDULE), True)])  # fmt: skip
        one = registry.watch(start, key=registry.keys.job("b.service"))
        await registry.create_job("a.service", unit())
        await registry.create_job("b.service", unit("b"))
        got_whole = await take(whole, 4)  # the jobs and their contents
        got_ranged = await take(ranged, 2)
        got_one = await take(one, 1)
        assert await asyncio.to_thread(_watch_gauges, private_etcd) == (1, 4)
        by_ident = {e.ident: e for e in got_whole if e.kind is JOB}
        assert {e.ident for e in got_ranged} == {"a.service", "b.service"}
        assert all(e is by_ident[e.ident] for e in got_ranged)  # decoded once
        assert got_one[0] is by_ident["b.service"]

        await ranged.aclose()  # its two watchers are cancelled on the stream
        assert await registry.schedule("a.service", "m1")
        assert shape((await take(whole, 1))[0]) == ("put", SCHEDULE)
        later = registry.watch((await registry.snapshot()).revision + 1)
        await registry.set_desired("b.service", JobState.LAUNCHED)
        await take(later, 1)  # asked after the cancel, on the same stream: both done
        assert [e.doc.desired for e in await take(one, 1)] == [JobState.LAUNCHED]
        assert await asyncio.to_thread(_watch_gauges, private_etcd) == (1, 3)
        for stream in (whole, one, later):
            await stream.aclose()  # the last one closes the stream: the next opens another
        async with registry.watch((await registry.snapshot()).revision + 1) as again:
            await registry.destroy("a.service")
            assert shape((await take(again, 1))[0])[0] == "delete"


async def test_a_watcher_left_behind_resumes_without_holding_the_others(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watcher nobody reads falls behind the shared stream: past the limit it leaves it and,
    when read again, resumes from its last revision (etcd sends what it missed): no event
    lost or repeated, and a watcher read meanwhile never waited for it."""
    import fleetd.registry.etcd as adapter

    monkeypatch.setattr(adapter, "_BEHIND_MAX", 50)
    await registry.create_job("s.service", unit())
    start = (await registry.snapshot()).revision + 1
    async with registry.watch(start) as idle, registry.watch(start) as busy:
        assert await registry.schedule("s.service", "m0")
        await take(idle, 1)  # both established
        await take(busy, 1)
        for i in range(1, 200):
            assert await registry.schedule("s.service", f"m{i}", expected=f"m{i - 1}")
            assert (await take(busy, 1))[0].doc.machine_id == f"m{i}"
        got = await take(idle, 199)
        assert idle.reconnects >= 1 and busy.reconnects == 0
    assert [e.doc.machine_id for e in got] == [f"m{i}" for i in range(1, 200)]
