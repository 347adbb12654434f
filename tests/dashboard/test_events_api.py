"""`GET /fleet/v1/x/events` through `Client.events()`, and the dashboard's Hub that follows it:
a real APIServer on a unix socket over the session etcd."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from fleetd.api.client import Client, Unreachable
from fleetd.api.server import APIServer
from fleetd.dashboard.hub import Hub
from fleetd.model import Policy, Rollout, RolloutAction, RolloutState, Target
from fleetd.registry import Registry
from tests.api.api_helpers import HELLO, machine, publish

DEADLINE = 20.0  # seconds: a bound against hanging, never an expectation of speed


@pytest.fixture
async def api(registry: Registry, sock_dir: Path) -> AsyncIterator[APIServer]:
    server = APIServer(registry, "a" * 32)
    await server.start(sock_dir / "fleet.sock")
    try:
        yield server
    finally:
        await server.stop()


class Follower:
    """`Client.events()` read in a thread (the client is synchronous), lines into a queue."""

    def __init__(self, client: Client) -> None:
        self.lines: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=self._run, args=(client,), daemon=True)
        self.thread.start()

    def _run(self, client: Client) -> None:
        try:
            for line in client.events():
                self.lines.put(line)
        except Unreachable as err:
            self.lines.put(err)

    async def until(self, predicate: Callable[[Any], bool]) -> Any:
        async def follow() -> Any:
            while True:
                line = await asyncio.to_thread(self.lines.get)
                if predicate(line):
                    return line

        return await asyncio.wait_for(follow(), DEADLINE)


def entry(line: Any, name: str) -> dict[str, Any] | None:
    if not isinstance(line, dict) or line.get("type") != "units":
        return None
    return next((e for e in line["units"] if e["name"] == name), None)


async def test_events_stream_snapshot_then_changes(api: APIServer, registry: Registry) -> None:
    client = Client(f"unix://{api.unix_path}", timeout=10.0)
    lease = await machine(registry, "m" * 32, "10.0.0.1", role="web")
    await asyncio.to_thread(client.put_unit, "old.service", options=HELLO, desired_state="inactive")
    follower = Follower(client)
    first = await follower.until(lambda line: True)
    assert first["type"] == "snapshot"
    assert [u["name"] for u in first["units"]] == ["old.service"]
    assert first["units"][0]["hash"].startswith("44d32a9")
    assert first["machines"] == [
        {"id": "m" * 32, "primaryIP": "10.0.0.1", "metadata": {"role": "web"}}
    ]

    await asyncio.to_thread(client.put_unit, "a.service", options=HELLO, desired_state="loaded")
    line = await follower.until(lambda line: (entry(line, "a.service") or {}).get("unit"))
    unit = entry(line, "a.service")["unit"]
    assert unit["desiredState"] == "loaded" and unit["hash"].startswith("44d32a9")
    assert line["revision"] > first["revision"]

    # a state published by a machine shows as the unit's states
    await registry.schedule("a.service", "m" * 32)
    await publish(registry, lease, "a.service", "m" * 32, unit["hash"])
    line = await follower.until(lambda line: (entry(line, "a.service") or {}).get("states"))
    assert entry(line, "a.service")["states"][0]["systemdSubState"] == "running"

    # a rollout written (or stepped) shows as a `rollouts` line: every rollout, as x/rollouts
    rollout = Rollout(
        "a.service", "r1", RolloutAction.UPDATE, "h1", "h2", Policy(),
        (Target("a.service", "m" * 32),), RolloutState.PAUSED,
    )  # fmt: skip
    await registry.etcd.put(registry.keys.rollout("a.service"), rollout.encode())
    line = await follower.until(lambda line: isinstance(line, dict) and line["type"] == "rollouts")
    assert [(r["name"], r["state"], r["progress"]) for r in line["rollouts"]] == [
        ("a.service", "paused", "0/1 updated, 1 pending")
    ]

    await asyncio.to_thread(client.destroy_unit, "a.service")
    await follower.until(
        lambda line: (e := entry(line, "a.service")) is not None and e["unit"] is None
    )

    await lease.revoke()
    line = await follower.until(lambda line: isinstance(line, dict) and line["type"] == "machines")
    assert line["machines"] == []

    await api.stop()  # the stream ends with the server: the client says so
    assert isinstance(await follower.until(lambda line: not isinstance(line, dict)), Unreachable)


def test_hub_keeps_the_view_from_the_lines() -> None:
    hub = Hub(lambda: Client("unix:///nonexistent"))
    unit = {"name": "a.service", "desiredState": "launched", "options": [], "hash": "abc"}
    state = {"name": "a.service", "machineID": "m", "systemdActiveState": "active"}
    assert hub.apply({"type": "snapshot", "revision": 3, "units": [unit], "states": [state],
                      "machines": [{"id": "m"}]})[0] == "snapshot"  # fmt: skip
    assert hub.view()["states"] == [state]
    event = hub.apply({"type": "units", "revision": 4, "units": [
        {"name": "a.service", "unit": None, "states": []},
        {"name": "b.service", "unit": {**unit, "name": "b.service"}, "states": []},
    ]})  # fmt: skip
    assert event is not None and event[0] == "units"
    view = hub.view()
    assert [u["name"] for u in view["units"]] == ["b.service"]
    assert view["states"] == [] and view["revision"] == 4
    assert hub.apply({"type": "machines", "revision": 5, "machines": []}) == (
        "machines",
        {"revision": 5, "machines": []},
    )
    # rollouts: the page shows those not over
    rollouts = [{"name": "b.service", "state": "running"}, {"name": "a.service", "state": "done"}]
    assert hub.apply({"type": "rollouts", "revision": 6, "rollouts": rollouts}) == (
        "rollouts",
        {"revision": 6, "rollouts": [{"name": "b.service", "state": "running"}]},
    )
    assert hub.view()["rollouts"] == [{"name": "b.service", "state": "running"}]
    assert hub.apply({"type": "whatever", "revision": 7}) is None


async def test_hub_asks_why_units_have_no_machine(api: APIServer, registry: Registry) -> None:
    """A unit no machine takes: the hub asks `x/unplaced` after the change and publishes the
    reason; when the unit no longer wants a machine the reasons empty again."""
    client = Client(f"unix://{api.unix_path}", timeout=10.0)
    await machine(registry, "m" * 32, "10.0.0.1", role="web")
    hub = Hub(lambda: client).start()
    events, _ = hub.subscribe()
    try:

        async def next_unplaced() -> dict[str, str]:
            while True:
                event = await asyncio.wait_for(asyncio.to_thread(events.get), DEADLINE)
                if event is not None and event[0] == "unplaced":
                    return event[1]["units"]

        db_only = [*HELLO, {"section": "X-Fleet", "name": "MachineMetadata", "value": "role=db"}]
        await asyncio.to_thread(
            client.put_unit, "db.service", options=db_only, desired_state="launched"
        )
        assert await next_unplaced() == {"db.service": "no machine matches MachineMetadata role=db"}
        assert hub.view()["unplaced"] == {
            "db.service": "no machine matches MachineMetadata role=db"
        }
        await asyncio.to_thread(client.put_unit, "db.service", desired_state="inactive")
        assert await next_unplaced() == {}
    finally:
        hub.stop()


async def test_hub_asks_what_machines_have_reserved(api: APIServer, registry: Registry) -> None:
    """A machine that says what it offers: the hub asks `x/machines` after each change and
    publishes its use; a machine that says nothing is never asked about."""
    client = Client(f"unix://{api.unix_path}", timeout=10.0)
    g = 1 << 30
    lease = await machine(
        registry, "m" * 32, "10.0.0.1", **{"fleet.memory": str(4 * g), "fleet.cpus": "2"}
    )
    hub = Hub(lambda: client).start()
    events, _ = hub.subscribe()
    try:

        async def next_use() -> dict[str, Any]:
            while True:
                event = await asyncio.wait_for(asyncio.to_thread(events.get), DEADLINE)
                if event is not None and event[0] == "use":
                    return event[1]["machines"]

        first = await next_use()
        assert first["m" * 32]["memory"] == {"capacity": 4 * g, "held": 0, "reserved": 0,
                                             "free": 4 * g}  # fmt: skip
        big = [*HELLO, {"section": "X-Fleet", "name": "MemoryReservation", "value": "3G"}]
        await asyncio.to_thread(
            client.put_unit, "big.service", options=big, desired_state="launched"
        )
        assert await registry.schedule("big.service", "m" * 32)
        while (use := await next_use())["m" * 32]["memory"]["reserved"] != 3 * g:
            pass  # the unit's creation first (nothing placed yet), then its placement
        assert use["m" * 32]["memory"]["free"] == g and not use["m" * 32]["overcommitted"]
        assert hub.view()["use"] == use
        # the machine leaves: no machine says its capacity, the use is forgotten
        await lease.revoke()
        assert await next_use() == {}
    finally:
        hub.stop()
