"""`POST /fleet/v1/x/units/{name}/restart` over a real unix socket, against a real etcd.

UnitStates are published through the registry where the machine's agent would (the agent's
restart itself is covered by tests/agent and the end-to-end test tests/e2e/test_restart.py;
what is refused and how a restart ends, by the planner's tests/reconcile/test_restart.py).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from api_helpers import machine, raw

from fleetd.api.client import APIError, Client
from fleetd.api.server import APIServer
from fleetd.model import JobState, UnitState
from fleetd.registry import KeyKind, Lease, Registry
from fleetd.unit import parse_unit
from tests.waiting import put

M1, M2 = "1" * 32, "2" * 32
GLOBAL = parse_unit("[Service]\nExecStart=/bin/sleep infinity\n[X-Fleet]\nGlobal=true\n")
PATH = "/fleet/v1/x/units/g.service/restart"
JSON_TYPE = {"Content-Type": "application/json"}


def state(name: str, mid: str, active: str = "active", restarted: str = "", load: str = "loaded"):
    sub = {"active": "running", "inactive": "dead", "failed": "failed"}.get(active, active)
    return UnitState(name, mid, GLOBAL.hash, load, active, sub, restarted=restarted)


# --- over HTTP -------------------------------------------------------------------------------
async def global_unit_on(registry: Registry, *mids: str) -> dict[str, Lease]:
    await registry.create_job("g.service", GLOBAL, JobState.LAUNCHED)
    leases = {}
    for mid in mids:
        leases[mid] = await machine(registry, mid, f"10.0.0.{mid[0]}")
        await registry.publish_state(state("g.service", mid), leases[mid])
    return leases


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1]", "unable to decode body: expected a JSON object"),
        (b"{}", "machineID must be the ID of a machine running the unit"),
        (b'{"machineID": 7}', "machineID must be the ID of a machine running the unit"),
        (b'{"machineID": ""}', "machineID must be the ID of a machine running the unit"),
        (b'{"machineID": "M", "wait": "yes"}', "wait must be true or false"),
        (
            b'{"machineID": "M", "timeout": -1}',
            "timeout must be a non-negative number of seconds or null",
        ),
        (
            b'{"machineID": "M", "timeout": true}',
            "timeout must be a non-negative number of seconds or null",
        ),
        (
            b'{"machineID": "M", "machine": "M"}',
            "unknown field 'machine': expected machineID, wait and timeout",
        ),
        (b"{nope", "unable to decode body: Expecting property name enclosed in double quotes"),
    ],
    ids=[
        "not-object",
        "no-machine",
        "machine-not-string",
        "machine-empty",
        "wait-not-bool",
        "timeout-negative",
        "timeout-bool",
        "unknown-field",
        "not-json",
    ],
)
async def test_bad_bodies_are_refused_and_write_nothing(
    api: APIServer, registry: Registry, body: bytes, message: str
) -> None:
    await global_unit_on(registry, M1)
    body = body.replace(b'"M"', f'"{M1}"'.encode())
    status, _, answer = await asyncio.to_thread(raw, api.unix_path, "POST", PATH, body, JSON_TYPE)
    assert status == 400
    assert json.loads(answer)["error"]["message"].startswith(message)
    assert (await registry.snapshot()).restarts == {}


async def test_unknown_unit_bad_name_and_machines_not_running_it(
    api: APIServer, client: Client, registry: Registry
) -> None:
    await global_unit_on(registry, M1)
    with pytest.raises(APIError) as err:
        await asyncio.to_thread(client.restart, "nope.service", M1)
    assert (err.value.code, err.value.message) == (404, "Unit nope.service does not exist.")
    with pytest.raises(APIError) as err:
        await asyncio.to_thread(client.restart, "nope.srvice", M1)
    assert err.value.code == 400 and "invalid unit type" in err.value.message
    with pytest.raises(APIError) as err:  # M2 does not report the unit
        await asyncio.to_thread(client.restart, "g.service", M2)
    assert (err.value.code, err.value.message) == (
        409, f"Unit g.service does not appear to be running on {M2}."
    )  # fmt: skip
    await registry.set_desired("g.service", JobState.LOADED)  # stopped: runs nowhere
    with pytest.raises(APIError) as err:
        await asyncio.to_thread(client.restart, "g.service", M1)
    assert err.value.code == 409
    assert (await registry.snapshot()).restarts == {}


async def test_request_without_waiting_stores_a_new_token_each_time(
    client: Client, registry: Registry
) -> None:
    await global_unit_on(registry, M1, M2)
    first = await asyncio.to_thread(client.restart, "g.service", M1)
    second = await asyncio.to_thread(client.restart, "g.service", M1)
    assert first["token"] and second["token"] and first["token"] != second["token"]
    snap = await registry.snapshot()
    assert {k: r.token for k, r in snap.restarts.items()} == {("g.service", M1): second["token"]}


@pytest.fixture
def watching() -> asyncio.Event:
    """Set once a stand-in follows the watch: the request may be sent."""
    return asyncio.Event()


async def act_as_agent(
    registry: Registry,
    lease: Lease,
    mid: str,
    watching: asyncio.Event,
    *states: tuple[str, bool],
) -> None:
    """Wait for the restart request for `mid` (a watch event from now on: the caller asks
    after this started), then publish `states` ((active, with the request's token or not)) as
    the machine's agent does after RestartUnit."""
    snap = await registry.snapshot()
    watching.set()
    async with registry.watch(snap.revision + 1) as events:
        async for event in events:
            if put(KeyKind.RESTART, ("g.service", mid))(event):
                token = event.doc.token  # type: ignore[union-attr]
                break
    for active, restarted in states:
        await registry.publish_state(
            state("g.service", mid, active, token if restarted else ""), lease
        )


async def test_waited_restart_ends_when_the_agent_reports_the_token_active(
    client: Client, registry: Registry, watching: asyncio.Event
) -> None:
    leases = await global_unit_on(registry, M1, M2)
    # the agent's states on the way: stopping (not yet done), then done and active
    agent = asyncio.create_task(
        act_as_agent(registry, leases[M1], M1, watching, ("deactivating", False), ("active", True))
    )
    await asyncio.wait_for(watching.wait(), 30)
    answer = await asyncio.wait_for(
        asyncio.to_thread(client.restart, "g.service", M1, wait=True, timeout=30), 30
    )
    await agent
    snap = await registry.snapshot()
    assert answer == {
        "done": True, "name": "g.service", "machineID": M1, "machineIP": "10.0.0.1",
        "token": snap.restarts[("g.service", M1)].token, "restarted": True,
        "systemdLoadState": "loaded", "systemdActiveState": "active",
        "systemdSubState": "running",
    }  # fmt: skip


async def test_waited_restart_that_fails_says_what_systemd_reports(
    client: Client, registry: Registry, watching: asyncio.Event
) -> None:
    leases = await global_unit_on(registry, M1)
    agent = asyncio.create_task(act_as_agent(registry, leases[M1], M1, watching, ("failed", True)))
    await asyncio.wait_for(watching.wait(), 30)
    answer = await asyncio.wait_for(
        asyncio.to_thread(client.restart, "g.service", M1, wait=True, timeout=30), 30
    )
    await agent
    assert answer["restarted"] is False
    assert answer["reason"] == "systemd reports ActiveState=failed SubState=failed"
    assert answer["systemdActiveState"] == "failed"


async def test_waited_restart_ends_when_the_machine_goes_away(
    client: Client, registry: Registry, watching: asyncio.Event
) -> None:
    leases = await global_unit_on(registry, M1)

    async def machine_dies() -> None:
        snap = await registry.snapshot()
        watching.set()
        async with registry.watch(snap.revision + 1) as events:
            async for event in events:
                if put(KeyKind.RESTART)(event):
                    break
        await leases[M1].revoke()  # its states go with its lease

    dies = asyncio.create_task(machine_dies())
    await asyncio.wait_for(watching.wait(), 30)
    answer = await asyncio.wait_for(
        asyncio.to_thread(client.restart, "g.service", M1, wait=True, timeout=30), 30
    )
    await dies
    assert answer["restarted"] is False
    assert answer["reason"] == (
        f"machine {M1} no longer reports the unit (the machine left the cluster)"
    )


async def test_waited_restart_times_out_with_the_state_seen(
    client: Client, registry: Registry
) -> None:
    await global_unit_on(registry, M1)  # no agent does it
    answer = await asyncio.to_thread(client.restart, "g.service", M1, wait=True, timeout=0.2)
    assert answer["restarted"] is False
    assert answer["reason"] == (
        f"timed out waiting for unit g.service to restart on {M1} "
        "(systemd reports loaded/active/running)"
    )
