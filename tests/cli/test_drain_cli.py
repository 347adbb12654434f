"""`fleetctl cordon`, `uncordon` and `drain`: the real fleetctl (a subprocess) against a real API
server, registry, etcd and engine (tests/cli/conftest.py), and the cordons API's refusals over
real HTTP. What they change is read back from etcd and with `list-machines` and `why`.

The conftest's agent stand-in publishes each placed unit's state; the health verdict a real
agent gives a unit a drain moved (tests/e2e/test_drain.py) is published here by a "gate
stand-in": healthy (or, for one test, unhealthy) as soon as the unit runs where it went.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import replace

import pytest

from fleetd.api.client import APIError, Client
from fleetd.model import DrainState, Phase
from fleetd.registry import Registry, Snapshot
from tests.cli.conftest import M1, M2, M3, Cluster
from tests.running import running
from tests.waiting import until

STATE_FIELDS = "machine,ip,metadata,state"
WEB = (
    "[Service]\nExecStart=/bin/sleep 1000\n\n[X-Fleet]\nMachineMetadata=role=web\n"
    "DisruptionBudget=MinAvailable=2\n"
)


async def gate_stand_in(registry: Registry, verdict: str = "healthy") -> None:
    """Publish `verdict` under the drain's id for every unit a drain moved, once it runs
    where it went (what the agent of that machine does after judging it)."""
    lease = await registry.grant_lease(30)
    judged: set[tuple[str, str, str]] = set()
    try:
        async with contextlib.aclosing(registry.follow()) as updates:
            async for update in updates:
                view = update.view
                for cordon in list(view.cordons.values()):
                    for t in cordon.targets:
                        state = view.states.get((t.unit, t.machine_id))
                        key = (cordon.id, t.unit, t.machine_id)
                        if t.phase is not Phase.UPDATING or state is None or key in judged:
                            continue
                        if state.active != "active":
                            continue
                        judged.add(key)
                        why = "" if verdict == "healthy" else "exited: status=1"
                        await registry.publish_state(
                            replace(state, gate=cordon.id, health=verdict, health_reason=why),
                            lease,
                        )
    finally:
        await lease.revoke()


async def web_units_on_m1(cluster: Cluster, count: int) -> list[str]:
    """`count` instances of web@ (role=web: only M1 has it) started and placed on M1."""
    (cluster.workdir / "web@.service").write_text(WEB)
    names = [f"web@{i}.service" for i in range(1, count + 1)]
    rc, _, err = await cluster.fleetctl("start", "--no-block", *names)
    assert rc == 0, err
    await until(cluster.registry, lambda s: all(s.placements.get(n) == M1 for n in names))
    await until(cluster.registry, lambda s: all(active_on_m1(s, n) for n in names))
    return names


def active_on_m1(snapshot: Snapshot, name: str) -> bool:
    state = snapshot.states.get((name, M1))
    return state is not None and state.active == "active"


async def test_cordon_and_uncordon(cluster: Cluster) -> None:
    rc, out, err = await cluster.fleetctl("cordon", "5ab7")
    assert (rc, out, err) == (
        0,
        "Cordoned machine 5ab7f3b4: it takes no new units, those there stay\n",
        "",
    )
    snapshot = await cluster.registry.snapshot()
    assert snapshot.cordons[M1].state is DrainState.CORDONED
    # again: said, nothing written
    rc, out, err = await cluster.fleetctl("cordon", M1)
    assert (rc, out, err) == (0, "Machine 5ab7f3b4 is already cordoned\n", "")

    # an empty cluster's first unit would land on M1 (least loaded, ties by ID): not now
    rc, _, err = await cluster.fleetctl("start", "--no-block", "hello.service")
    assert rc == 0, err
    placed = await until(cluster.registry, lambda s: "hello.service" in s.placements)
    assert placed.placements["hello.service"] == M3  # 8197… sorts before 929c…
    # a unit only M1 may take waits, and says why
    (cluster.workdir / "pinned.service").write_text(
        f"[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nMachineID={M1}\n"
    )
    assert (await cluster.fleetctl("start", "--no-block", "pinned.service"))[0] == 0
    rc, out, _ = await cluster.fleetctl("why", "pinned.service")
    assert "machine is cordoned" in out

    # list-machines: fleet's table as it was; the STATE column when asked for; json adds it
    rc, out, _ = await cluster.fleetctl("list-machines")
    assert out.splitlines()[0] == "MACHINE\t\tIP\t\tMETADATA"
    rc, out, _ = await cluster.fleetctl("list-machines", "-l", "--fields", STATE_FIELDS)
    lines = out.splitlines()
    assert lines[0].split() == ["MACHINE", "IP", "METADATA", "STATE"]
    assert f"{M1}\t127.0.0.11\tmachine=m1,role=web\tcordoned" in lines
    assert f"{M2}\t127.0.0.12\tmachine=m2,role=db\t-" in lines
    rc, out, _ = await cluster.fleetctl("list-machines", "--output", "json")
    assert {row["machine"][:8]: row["state"] for row in json.loads(out)} == {
        "5ab7f3b4": "cordoned",
        "929c22af": "-",
        "8197e13c": "-",
    }

    rc, out, err = await cluster.fleetctl("uncordon", "5ab7")
    assert (rc, out, err) == (0, "Uncordoned machine 5ab7f3b4: it takes new units again\n", "")
    await until(cluster.registry, lambda s: s.placements.get("pinned.service") == M1)
    rc, out, err = await cluster.fleetctl("uncordon", "5ab7")
    assert (rc, out, err) == (0, "Machine 5ab7f3b4 is not cordoned\n", "")
    rc, out, _ = await cluster.fleetctl("list-machines", "--output", "json")
    assert "state" not in json.loads(out)[0]  # nothing cordoned: the json as it was


async def test_unknown_or_ambiguous_machine_changes_nothing(cluster: Cluster) -> None:
    for command in ("cordon", "uncordon", "drain"):
        rc, out, err = await cluster.fleetctl(command, "ffff")
        assert (rc, out) == (1, "")
        assert err == (
            "Unable to proceed: machine does not exist (no machine ID starts with 'ffff')\n"
        )
    rc, _, err = await cluster.fleetctl("cordon", "")
    assert rc == 1 and "a machine ID" in err
    assert not (await cluster.registry.snapshot()).cordons


async def test_drain_moves_units_one_at_a_time_then_drained(cluster: Cluster) -> None:
    names = await web_units_on_m1(cluster, 3)
    rc, out, err = await cluster.fleetctl("set-metadata", "929c", "role=web")
    assert rc == 0, err
    revision = (await cluster.registry.snapshot()).revision
    async with running(gate_stand_in(cluster.registry)):
        rc, out, err = await cluster.fleetctl("drain", "5ab7")
    assert (rc, err) == (0, "")
    lines = out.splitlines()
    # as begun (then the versions fleetctl's follow saw: it may see only the last ones; every
    # version is checked below, from the watch)
    assert lines[0] == "drain of 5ab7f3b4: 0/3 moved, 0 in progress, 3 pending"
    assert lines[-2:] == [
        "drain of 5ab7f3b4: 3/3 moved, 0 in progress, 0 pending",
        "Machine 5ab7f3b4 drained: 3 units moved",
    ]
    snapshot = await cluster.registry.snapshot()
    assert all(snapshot.placements[n] == M2 for n in names)
    assert snapshot.cordons[M1].state is DrainState.DRAINED

    # one at a time: never two targets in progress in any version of the document
    versions = await cordon_versions(cluster.registry, revision, snapshot.revision)
    assert versions and all(
        sum(t.phase is Phase.UPDATING for t in c.targets) <= 1 for c in versions
    )
    assert any(sum(t.phase is Phase.UPDATING for t in c.targets) == 1 for c in versions)

    rc, out, _ = await cluster.fleetctl("list-machines", "-l", "--fields", STATE_FIELDS)
    assert f"{M1}\t127.0.0.11\tmachine=m1,role=web\tdrained" in out.splitlines()
    # drained again: nothing there, drained at once
    rc, out, err = await cluster.fleetctl("drain", M1)
    assert (rc, err) == (0, "")
    assert out.splitlines()[-1] == "Machine 5ab7f3b4 drained: 0 units moved"


async def cordon_versions(registry: Registry, start: int, end: int) -> list:  # type: ignore[type-arg]
    """Every version of M1's cordon written between two revisions (the watch, not samples)."""
    from fleetd.registry import Changed, KeyKind

    seen = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            async with registry.watch(start + 1) as events:
                async for event in events:
                    if isinstance(event, Changed) and event.kind is KeyKind.CORDON:
                        seen.append(event.doc)
                    if event.revision >= end:
                        break
    return seen


async def test_a_failure_stops_the_drain_then_drain_again_and_no_block(cluster: Cluster) -> None:
    await web_units_on_m1(cluster, 3)
    assert (await cluster.fleetctl("set-metadata", "8197", "role=web"))[0] == 0
    async with running(gate_stand_in(cluster.registry, "unhealthy")):
        rc, out, err = await cluster.fleetctl("drain", "5ab7")
    assert rc == 1
    assert err == (
        "Error: drain of 5ab7f3b4 stopped: web@1.service failed on 8197e13c: exited: status=1; "
        "the machine stays cordoned (fleetctl drain to move what is left, fleetctl uncordon "
        "to end)\n"
    )
    snapshot = await cluster.registry.snapshot()
    # not released after the failure
    assert snapshot.placements["web@2.service"] == snapshot.placements["web@3.service"] == M1
    assert snapshot.cordons[M1].state is DrainState.DRAINING

    # drain again: a fresh drain of what is left; nothing judges it now, so it keeps draining
    rc, out, err = await cluster.fleetctl("drain", "--no-block", "5ab7")
    assert (rc, out, err) == (0, "drain of 5ab7f3b4: 0/2 moved, 0 in progress, 2 pending\n", "")
    rc, out, err = await cluster.fleetctl("drain", "--no-block", "5ab7")
    assert (rc, err) == (0, "")
    assert out.startswith("Machine 5ab7f3b4 is already draining\ndrain of 5ab7f3b4: 0/2 moved")
    rc, out, err = await cluster.fleetctl("uncordon", "5ab7")
    assert rc == 0 and out.startswith("Uncordoned machine 5ab7f3b4: its drain ended (0/2 moved")
    assert M1 not in (await cluster.registry.snapshot()).cordons


async def test_budget_wait_is_said(cluster: Cluster) -> None:
    # two web@ on M1 with MinAvailable=2: none may go while both are needed running
    await web_units_on_m1(cluster, 2)
    rc, out, err = await cluster.fleetctl("drain", "--no-block", "5ab7")
    assert rc == 0, err
    snapshot = await until(cluster.registry, lambda s: bool(s.cordons[M1].reason))
    assert snapshot.cordons[M1].reason == (
        "waiting: DisruptionBudget=MinAvailable=2 of web@.service: 2 running"
    )
    rc, out, err = await cluster.fleetctl("drain", "--no-block", M1)
    assert out.splitlines()[-1] == (
        "drain of 5ab7f3b4: 0/2 moved, 0 in progress, 2 pending "
        "(waiting: DisruptionBudget=MinAvailable=2 of web@.service: 2 running)"
    )


# ---- the API's refusals (real HTTP)


@pytest.mark.parametrize(
    ("method", "path", "body", "code", "message"),
    [
        ("PUT", "/x/machines/nope/cordon", None, 404, "machine nope is not in the cluster"),
        ("POST", "/x/machines/nope/drain", {}, 404, "machine nope is not in the cluster"),
        ("GET", f"/x/machines/{M2}/cordon", None, 404, f"machine {M2} is not cordoned"),
        ("DELETE", "/x/machines/nope/cordon", None, 404,
         "machine nope is not in the cluster and not cordoned"),
        ("POST", f"/x/machines/{M2}/drain", {"stopGlobals": 1}, 400,
         "unable to decode body: stopGlobals must be true or false"),
        ("POST", f"/x/machines/{M2}/drain", {"force": True}, 400,
         "unknown field 'force' in body: expected stopGlobals"),
        ("PUT", "/x/machines/a%20b/cordon", None, 400,
         "invalid machine ID 'a b': it may not hold whitespace or control characters"),
    ],
    ids=["cordon-unknown", "drain-unknown", "get-not-cordoned", "uncordon-unknown",
         "drain-bad-flag", "drain-unknown-field", "bad-id"],
)  # fmt: skip
async def test_api_refusals_write_nothing(
    cluster: Cluster, method: str, path: str, body: object, code: int, message: str
) -> None:
    client = Client(cluster.endpoint, timeout=10.0)
    before: Snapshot = await cluster.registry.snapshot()
    with pytest.raises(APIError) as caught:
        await asyncio.to_thread(client._call, method, path, body=body)
    assert (caught.value.code, caught.value.message) == (code, message)
    assert (await cluster.registry.snapshot()).cordons == before.cordons


async def test_api_cordon_documents(cluster: Cluster) -> None:
    client = Client(cluster.endpoint, timeout=10.0)
    answer = await asyncio.to_thread(client.cordon, M2)
    assert answer["changed"] and answer["cordon"]["state"] == "cordoned"
    assert (await asyncio.to_thread(client.cordon, M2))["changed"] is False
    [listed] = await asyncio.to_thread(client.cordons)
    assert listed["machine"] == M2 and listed["progress"] == "0/0 moved, 0 in progress, 0 pending"
    drained = await asyncio.to_thread(client.drain, M2, stop_globals=True)
    assert drained["cordon"]["state"] == "drained" and drained["cordon"]["stop_globals"]
    followed = await asyncio.to_thread(lambda: list(client.follow_drain(M2)))
    assert [d["state"] for d in followed] == ["drained"]
    assert json.dumps(await asyncio.to_thread(client.cordon_of, M2)) == json.dumps(followed[0])
