"""Rollouts through the real `fleetctl` against a real API, registry, etcd and engine leader
(tests/cli/conftest.py). No agent judges health here: `judge` stands in for the agents'
health gates (the agent's own gate is tested on real systemd in tests/agent), publishing each
judged instance healthy or not; everything else — beginning, the engine's steps, the revert,
the commands, what fleetctl prints and its exit status — is the real thing. The whole path on
real machines: tests/e2e/test_rolling_updates.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable

import pytest

from fleetd.model import Phase, RolloutState, UnitState
from fleetd.registry import ClusterView, Registry
from fleetd.registry.fold import Snapshot
from tests.api.api_helpers import raw
from tests.cli.conftest import M1, M2, M3, Cluster
from tests.running import running
from tests.waiting import until

TEMPLATE = """[Service]
ExecStart=/bin/sleep {version}

[X-Fleet]
UpdateMaxParallel=2
UpdateMinHealthyTime=1s
"""


def instances(n: int = 3) -> list[str]:
    return [f"web@{i}.service" for i in range(1, n + 1)]


async def judge(registry: Registry, verdict: Callable[[str, str], tuple[str, str]]) -> None:
    """Publish, for every instance a rollout is judging, the health `verdict(unit, machine)`
    gives, under the rollout's id (what each machine's agent does after its health gate)."""
    lease = await registry.grant_lease(30)
    done: set[tuple[str, str, str]] = set()

    async def sync(view: ClusterView) -> None:
        for rollout in view.rollouts.values():
            for t in rollout.targets:
                key = (rollout.id, t.unit, t.machine_id)
                if t.phase is not Phase.UPDATING or key in done:
                    continue
                job = view.jobs.get(t.unit)
                health, why = verdict(t.unit, t.machine_id)
                state = UnitState(
                    t.unit, t.machine_id, job.unit_hash if job else rollout.to_hash,
                    "loaded", "active", "running", gate=rollout.id, health=health,
                    health_reason=why,
                )  # fmt: skip
                await registry.publish_state(state, lease)
                done.add(key)

    try:
        async with contextlib.aclosing(registry.follow()) as updates:
            async for update in updates:
                await sync(update.view)
    finally:
        with contextlib.suppress(Exception):
            await lease.revoke()


@contextlib.asynccontextmanager
async def judged(
    cluster: Cluster, verdict: Callable[[str, str], tuple[str, str]]
) -> AsyncIterator[None]:
    async with running(judge(cluster.registry, verdict)):
        yield


async def started(cluster: Cluster, version: str = "1000", n: int = 3) -> None:
    (cluster.workdir / "web@.service").write_text(TEMPLATE.format(version=version))
    rc, _, err = await cluster.fleetctl("start", "--no-block", *instances(n))
    assert rc == 0, err

    def placed(snapshot: Snapshot) -> bool:
        return all(
            (name, snapshot.placements.get(name)) in snapshot.states for name in instances(n)
        )

    await until(cluster.registry, placed)


def new_version(cluster: Cluster, version: str = "2000") -> None:
    (cluster.workdir / "web@.service").write_text(TEMPLATE.format(version=version))


async def test_rolling_replace_of_a_template_goes_batch_by_batch_to_done(
    cluster: Cluster,
) -> None:
    await started(cluster)
    new_version(cluster)
    in_flight: list[int] = []  # instances being updated, in every rollout document written

    async def record() -> None:
        async with contextlib.aclosing(cluster.registry.follow()) as updates:
            async for update in updates:
                rollout = update.view.rollouts.get("web@.service")
                if rollout is not None:
                    in_flight.append(rollout.counts()[Phase.UPDATING])

    async with running(record()), judged(cluster, lambda unit, machine: ("healthy", "")):
        rc, out, err = await cluster.fleetctl("rolling-replace", "web@.service")
    assert rc == 0, err
    assert max(in_flight) == 2  # UpdateMaxParallel=2
    lines = out.splitlines()
    assert lines[0] == "web@.service: 0/3 updated, 3 pending"  # as it began
    assert lines[-1] == "web@.service: 3/3 updated (done)"
    snapshot = await cluster.registry.snapshot()
    rollout = snapshot.rollouts["web@.service"]
    assert rollout.state is RolloutState.DONE
    assert {snapshot.jobs[n].unit_hash for n in instances()} == {rollout.to_hash}
    assert rollout.from_hash not in snapshot.units  # the previous version was collected
    # /metrics counts rollouts by state
    sock = cluster.endpoint.removeprefix("unix://")
    _, _, body = await asyncio.to_thread(raw, sock, "GET", "/metrics")
    assert 'fleetd_rollouts{state="done"} 1' in body.decode()
    assert 'fleetd_rollouts{state="running"} 0' in body.decode()
    # the finished rollout is kept for `rollout status` and `rollout list`
    rc, out, _ = await cluster.fleetctl("rollout", "list")
    assert out.splitlines() == [
        "NAME\tACTION\tSTATE\tPROGRESS",
        "web@.service\tupdate\tdone\t3/3 updated",
    ]


async def test_an_unhealthy_instance_fails_the_rollout_and_everything_goes_back(
    cluster: Cluster,
) -> None:
    await started(cluster)
    before = (await cluster.registry.snapshot()).jobs["web@1.service"].unit_hash
    new_version(cluster)

    def verdict(unit: str, machine: str) -> tuple[str, str]:  # a broken new version
        return "unhealthy", "ExecStart=/bin/false (code=exited, status=1/FAILURE)"

    async with judged(cluster, verdict):
        rc, out, err = await cluster.fleetctl("rolling-replace", "web@.service")
    assert rc == 1
    snapshot = await cluster.registry.snapshot()
    failed = next(t for t in snapshot.rollouts["web@.service"].targets if t.reason)
    assert err.splitlines()[0] == (
        f"{failed.unit}: ExecStart=/bin/false (code=exited, status=1/FAILURE)"
    )
    assert err.splitlines()[-1] == (
        f"Error rolling out web@.service: {failed.unit} on {failed.machine_id[:8]}: "
        f"ExecStart=/bin/false (code=exited, status=1/FAILURE); every updated instance is "
        f"back on {before[:7]}"
    )
    rollout = snapshot.rollouts["web@.service"]
    assert rollout.state is RolloutState.REVERTED
    touched = [t for t in rollout.targets if t.phase is not Phase.PENDING]
    assert len(touched) <= 2  # UpdateMaxParallel: the third was never touched
    assert {snapshot.jobs[n].unit_hash for n in instances()} == {before}
    assert "web@.service: " in out


async def test_pause_resume_and_undo_through_fleetctl(cluster: Cluster) -> None:
    await started(cluster)
    before = (await cluster.registry.snapshot()).jobs["web@1.service"].unit_hash
    new_version(cluster)
    # nobody judges: the first batch stays in progress
    rc, out, err = await cluster.fleetctl("rolling-replace", "--no-block", "web@.service")
    assert (rc, out) == (0, "web@.service: 0/3 updated, 3 pending\n"), err

    def judging(snapshot: Snapshot) -> bool:
        rollout = snapshot.rollouts.get("web@.service")
        return rollout is not None and rollout.counts()[Phase.UPDATING] == 2

    await until(cluster.registry, judging)
    rc, out, err = await cluster.fleetctl("rollout", "pause", "web@.service")
    assert rc == 0, err
    assert out.splitlines()[0] == "web@.service: 0/3 updated, 2 in progress, 1 pending (paused)"
    rc, _, err = await cluster.fleetctl("rollout", "pause", "web@.service")
    assert (rc, err) == (1, "Error: cannot pause the rollout of web@.service: the rollout of "
                            "web@.service is paused: it cannot be paused\n")  # fmt: skip
    rc, out, err = await cluster.fleetctl("rollout", "status", "--no-block", "web@.service")
    assert rc == 0, err
    assert out.splitlines()[1:4] == [
        "Progress: 0/3 updated, 2 in progress, 1 pending",
        "Reason: paused",
        "Policy: UpdateMaxParallel=2 UpdateMinHealthyTime=1s UpdateHealthyDeadline=300s",
    ]
    rc, out, err = await cluster.fleetctl("rollout", "resume", "--no-block", "web@.service")
    assert (rc, out) == (0, "web@.service: 0/3 updated, 2 in progress, 1 pending\n"), err
    # another version while this one runs: refused, nothing written
    new_version(cluster, "3000")
    rc, _, err = await cluster.fleetctl("rolling-replace", "web@.service")
    assert rc == 1 and "a rollout of web@.service is in progress" in err, err
    rc, out, err = await cluster.fleetctl("rollout", "undo", "web@.service", "--output", "json")
    assert rc == 0, err
    last = json.loads(out.splitlines()[-1])
    assert last["state"] == "reverted" and last["reason"] == "undone"
    snapshot = await cluster.registry.snapshot()
    assert {snapshot.jobs[n].unit_hash for n in instances()} == {before}


async def test_start_replace_of_every_launched_instance_rolls_the_template_out(
    cluster: Cluster,
) -> None:
    await started(cluster)
    new_version(cluster)
    async with judged(cluster, lambda unit, machine: ("healthy", "")):
        rc, out, err = await cluster.fleetctl("start", "--replace", *instances())
    assert rc == 0, err
    assert out.splitlines()[-1] == "web@.service: 3/3 updated (done)"
    snapshot = await cluster.registry.snapshot()
    rollout = snapshot.rollouts["web@.service"]
    assert rollout.state is RolloutState.DONE
    assert {snapshot.jobs[n].unit_hash for n in instances()} == {rollout.to_hash}
    # some of them only: replaced at once, as fleet does (no new rollout)
    new_version(cluster, "3000")
    rc, _, err = await cluster.fleetctl("start", "--replace", "web@1.service", "web@2.service")
    assert rc == 0, err
    snapshot = await cluster.registry.snapshot()
    assert snapshot.rollouts["web@.service"].id == rollout.id
    assert snapshot.jobs["web@1.service"].unit_hash != rollout.to_hash
    assert snapshot.jobs["web@3.service"].unit_hash == rollout.to_hash


async def test_a_template_running_nowhere_is_replaced_at_once(cluster: Cluster) -> None:
    (cluster.workdir / "web@.service").write_text(TEMPLATE.format(version="1"))
    rc, _, err = await cluster.fleetctl("submit", "web@1.service")
    assert rc == 0, err
    rc, _, err = await cluster.fleetctl("rolling-replace", "web@.service")
    assert (rc, err) == (
        1,
        "Error rolling out web@.service: template web@.service has no launched instance to "
        "roll out\n",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("rollout", "status", "nosuch.service"),
         "Error retrieving the rollout of nosuch.service: no rollout of nosuch.service\n"),
        (("rolling-replace", "missing@.service"), "Error reading the new version of "
         "missing@.service: "),
        (("rollout", "promote", "nosuch.service"),
         "Error: cannot promote the rollout of nosuch.service: no rollout of nosuch.service\n"),
    ],
)  # fmt: skip
async def test_bad_arguments_say_why_and_change_nothing(
    cluster: Cluster, args: tuple[str, ...], message: str
) -> None:
    before = await cluster.registry.snapshot()
    rc, out, err = await cluster.fleetctl(*args)
    assert rc == 1 and out == ""
    assert err.startswith(message), err
    after = await cluster.registry.snapshot()
    assert (after.jobs, after.rollouts) == (before.jobs, before.rollouts)


MACHINE_IDS = (M1, M2, M3)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/fleet/v1/x/rollouts", "[]", 400, "unable to decode body: expected a JSON object"),
        ("POST", "/fleet/v1/x/rollouts", '{"name": "../x.service"}', 400, "invalid"),
        ("POST", "/fleet/v1/x/rollouts", '{"name": "web@.service", "action": "explode"}', 400,
         "invalid action 'explode': expected update or restart"),
        ("POST", "/fleet/v1/x/rollouts", '{"name": "web@.service"}', 400,
         "an update rollout needs the new version's options"),
        ("POST", "/fleet/v1/x/rollouts",
         '{"name": "web@.service", "options": [{"section": "X-Fleet", "name": '
         '"UpdateMaxParallel", "value": "0"}]}', 400,
         "UpdateMaxParallel=0: expected a whole number of at least 1 or a percentage (N%)"),
        ("POST", "/fleet/v1/x/rollouts", '{"name": "g.service", "action": "restart", '
         '"options": [{"section": "Service", "name": "ExecStart", "value": "/bin/true"}]}', 400,
         "a restart rollout takes no options"),
        ("POST", "/fleet/v1/x/rollouts/web@.service/explode", "{}", 404,
         "no such rollout command 'explode'"),
    ],
)  # fmt: skip
async def test_bad_api_requests_are_refused_and_change_nothing(
    cluster: Cluster, method: str, path: str, body: str, status: int, message: str
) -> None:
    before = await cluster.registry.snapshot()
    sock = cluster.endpoint.removeprefix("unix://")
    got, _, answer = await asyncio.to_thread(
        raw, sock, method, path, body, {"Content-Type": "application/json"}
    )
    error = json.loads(answer)["error"]
    assert (got, error["code"]) == (status, status)
    assert message in error["message"], error
    after = await cluster.registry.snapshot()
    assert (after.jobs, after.units, after.rollouts) == (before.jobs, before.units, before.rollouts)
