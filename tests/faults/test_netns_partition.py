"""A whole fleetd cut off from etcd by a network namespace whose link goes down (issue 12).

Machine A is a namespaced `systemd --user` machine living in a network namespace of this test's
own, joined to the host by a veth pair; its real `fleetd` (agent and engine) reaches etcd at the
host side of that pair. Machine B is a normal namespaced machine whose fleetd reaches etcd on
127.0.0.1. A runs the unit (its fleetd starts first, so it also leads the engines); then B joins.

The partition is `ip link set <host side> down`: A's packets to etcd are dropped, not refused
(established connections hang until their request deadline; new ones fail once ARP gives up).
A's lease can no longer be renewed and expires in etcd; B's engine takes the leadership over and
places the unit on B. Both machines' systemd are followed over D-Bus from the test: the arrival
of A's "stopped" signal (on the host clock: at or after the real stop) against B's own record of
when the new start began (InactiveExitTimestamp) decides the order, conservatively, as in
test_partition.py (which cuts a TCP proxy in process: refused connections).

- fencing on: A stops its unit before B starts it: 0 s running twice (asserted).
- fencing off: A runs on until the link is up again; the window both run is measured (printed).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleetd.model import JobState
from fleetd.registry import EtcdConfig, Registry
from fleetd.sandbox.boot import start_and_join
from fleetd.sandbox.etcd import EtcdServer
from fleetd.sandbox.machine import Machine
from fleetd.systemd.dbus import PROPS_IFACE, SYSTEMD, UNIT_IFACE, SystemdBus, UnitChanged, unit_path
from tests.faults.harness import active_on, report
from tests.faults.inprocess import LOOP, Transition
from tests.waiting import until

pytestmark = [
    pytest.mark.root("network namespaces, namespaced systemd machines"),
    pytest.mark.timeout(300),
]

TTL = 3
UNIT = "netpart.service"
DEADLINE = TTL + 20.0  # a bound against hanging, not a speed goal
HEAL_DEADLINE = DEADLINE + 60.0  # A's etcd client reconnects with a backoff after the link is up
STOPPED = ("inactive", "failed")
SUBNET = "10.213"


# ---- the link


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)


def _ip_ok(*args: str) -> None:
    done = _ip(*args)
    assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr.strip()}"


@dataclass(frozen=True, slots=True)
class Link:
    """A network namespace joined to the host by a veth pair (a /30 of 10.213.X.0)."""

    netns: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str

    def down(self) -> None:
        _ip_ok("link", "set", self.host_if, "down")

    def up(self) -> None:
        _ip_ok("link", "set", self.host_if, "up")


def _unused_third_octet() -> int:
    """An X such that no address or route of this host mentions 10.213.X."""
    used = _ip("-o", "addr").stdout + _ip("route", "show", "table", "all").stdout
    free = [x for x in range(1, 255) if f"{SUBNET}.{x}." not in used]
    assert free, f"every {SUBNET}.X.0/24 is in use"
    return random.choice(free)


@pytest.fixture
def link() -> Iterator[Link]:
    if shutil.which("ip") is None or _ip("netns", "list").returncode != 0:
        pytest.skip("`ip netns` is unavailable (iproute2, see scripts/install-system-deps.sh)")
    tag, x = secrets.token_hex(4), _unused_third_octet()
    made = Link(
        f"fleetd-part-{tag}", f"fph{tag}", f"fpn{tag}", f"{SUBNET}.{x}.1", f"{SUBNET}.{x}.2"
    )
    _ip_ok("netns", "add", made.netns)
    try:
        _ip_ok(
            "link",
            "add",
            made.host_if,
            "type",
            "veth",
            "peer",
            "name",
            made.ns_if,
            "netns",
            made.netns,
        )
        _ip_ok("addr", "add", f"{made.host_ip}/30", "dev", made.host_if)
        _ip_ok("link", "set", made.host_if, "up")
        _ip_ok("-n", made.netns, "addr", "add", f"{made.ns_ip}/30", "dev", made.ns_if)
        _ip_ok("-n", made.netns, "link", "set", made.ns_if, "up")
        _ip_ok("-n", made.netns, "link", "set", "lo", "up")
        yield made
    finally:
        _ip("link", "del", made.host_if)  # its peer goes with it
        _ip("netns", "del", made.netns)


# ---- etcd, reachable from the namespace


class EtcdOnLink(EtcdServer):
    """The test's etcd, listening on the host side of the veth as well as on 127.0.0.1."""

    def __init__(self, data_dir: Path, link_ip: str) -> None:
        super().__init__(data_dir)
        self.link_ip = link_ip

    @property
    def link_url(self) -> str:
        return f"http://{self.link_ip}:{self.client_port}"

    def command(self) -> list[str]:
        cmd = super().command()
        listen = f"--listen-client-urls={self.client_url}"
        assert listen in cmd, cmd
        return [f"{listen},{self.link_url}" if arg == listen else arg for arg in cmd]


@pytest.fixture
def etcd_on_link(tmp_path: Path, link: Link) -> Iterator[EtcdOnLink]:
    server = EtcdOnLink(tmp_path / "etcd", link.host_ip).start()  # READY=1, then /health
    try:
        yield server
    finally:
        server.stop()


# ---- fleetd in a machine


@dataclass
class Fleetd:
    machine: Machine
    proc: asyncio.subprocess.Process
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


async def start_fleetd(
    machine: Machine, registry: Registry, etcd_url: str, public_ip: str, fence: bool, log: Path
) -> Fleetd:
    """The real `fleetd` inside `machine` (flags as `fleetd sandbox` gives them); returns once it
    has registered (its machine key in etcd), fails at once if it exits first."""

    async def launch() -> asyncio.subprocess.Process:
        with log.open("ab") as out:
            return await machine.exec(
                sys.executable, "-m", "fleetd.main",
                f"--etcd-servers={etcd_url}",
                f"--public-ip={public_ip}",
                f"--metadata=machine={machine.name}",
                f"--agent-ttl={TTL}",
                f"--dbus-address={machine.bus_address}",
                "--units-directory=/run/fleet/units",
                "--runtime-dir=/run/fleet",
                f"--api-socket={machine.root / 'fleet.sock'}",
                "--machine-id-file=/etc/machine-id",
                f"--fence-on-lease-loss={'true' if fence else 'false'}",
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            )  # fmt: skip

    proc, why = await start_and_join(registry, machine.machine_id, launch, DEADLINE)
    fleetd = Fleetd(machine, proc, log)
    if why is not None:
        await stop_fleetd(fleetd)
        raise AssertionError(f"fleetd of {machine.name} {why}: {fleetd.log_text()[-2000:]}")
    return fleetd


async def stop_fleetd(fleetd: Fleetd) -> None:
    """SIGTERM the fleetd this test started (by PID), SIGKILL if it lingers."""
    proc = fleetd.proc
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()


# ---- each machine's systemd, followed from the test


@contextlib.asynccontextmanager
async def systemd_of(machine: Machine) -> AsyncIterator[SystemdBus]:
    """A connection to the machine's systemd, subscribed to UNIT's property changes."""
    bus = await SystemdBus.connect(machine.bus_address)
    try:
        await bus.add_match(
            f"type='signal',sender='{SYSTEMD}',interface='{PROPS_IFACE}',"
            f"member='PropertiesChanged',path='{unit_path(UNIT)}'"
        )
        await bus.call("Subscribe")
        yield bus
    finally:
        bus.disconnect()


def first_state(bus: SystemdBus, states: tuple[str, ...]) -> asyncio.Future[Transition]:
    """The first signal saying UNIT is in one of `states`, stamped when it arrived."""
    arrived: asyncio.Future[Transition] = asyncio.get_running_loop().create_future()

    def on_signal(event: object) -> None:
        if not isinstance(event, UnitChanged) or event.unit != UNIT or arrived.done():
            return
        active = event.changed.get("ActiveState")
        if active in states:
            arrived.set_result(Transition(time.monotonic(), time.time(), active))

    bus.on_signal(on_signal)
    return arrived


async def active_state(bus: SystemdBus) -> str:
    (rows,) = await bus.call("ListUnitsByNames", "as", [[UNIT]])
    return str(rows[0][3])


async def began(bus: SystemdBus) -> float:
    """systemd's own record of when UNIT last left "inactive" (seconds since the epoch)."""
    return int(await bus.get_property(UNIT, UNIT_IFACE, "InactiveExitTimestamp")) / 1e6


# ---- the two machines


@dataclass
class Setup:
    registry: Registry  # the test's, on 127.0.0.1
    link: Link
    a: Fleetd  # in the namespace: the one to be cut off
    b: Fleetd


@contextlib.asynccontextmanager
async def partitionable(
    link: Link, etcd: EtcdOnLink, logs: Path, fence: bool
) -> AsyncIterator[Setup]:
    """A (in the namespace) runs UNIT; then B joins. Everything is stopped by PID afterwards."""
    tag = secrets.token_hex(3)
    a = Machine(f"npa{tag}", netns=link.netns)
    b = Machine(f"npb{tag}")
    config = EtcdConfig(endpoints=etcd.endpoints, request_timeout=5.0)
    async with contextlib.AsyncExitStack() as stack:
        registry = await stack.enter_async_context(Registry(config))
        for machine in (a, b):
            stack.push_async_callback(_remove_machine, machine)
        await asyncio.gather(a.start(), b.start())
        fa = await start_fleetd(a, registry, etcd.link_url, link.ns_ip, fence, logs / "a.log")
        stack.push_async_callback(stop_fleetd, fa)
        await registry.create_job(UNIT, LOOP, JobState.LAUNCHED)
        await until(registry, lambda s: active_on(s, UNIT) == {a.machine_id}, DEADLINE)
        fb = await start_fleetd(b, registry, etcd.client_url, "127.0.0.42", fence, logs / "b.log")
        stack.push_async_callback(stop_fleetd, fb)
        yield Setup(registry, link, fa, fb)


async def _remove_machine(machine: Machine) -> None:
    await machine.stop()  # systemd first (it stops its units), then whatever is left, by cgroup
    machine.remove()


@dataclass
class Cut:
    at: float  # monotonic time the link went down
    b_started: Transition
    a_stopped: asyncio.Future[Transition]


async def cut_and_wait_for_b(s: Setup, bus_a: SystemdBus, bus_b: SystemdBus) -> Cut:
    a_stopped = first_state(bus_a, STOPPED)
    b_started = first_state(bus_b, ("active",))
    at = time.monotonic()
    s.link.down()
    started = await asyncio.wait_for(b_started, DEADLINE)
    return Cut(at, started, a_stopped)


async def test_link_down_with_fencing_stops_before_the_unit_starts_elsewhere(
    link: Link, etcd_on_link: EtcdOnLink, tmp_path: Path
) -> None:
    async with (
        partitionable(link, etcd_on_link, tmp_path, fence=True) as s,
        systemd_of(s.a.machine) as bus_a,
        systemd_of(s.b.machine) as bus_b,
    ):
        cut = await cut_and_wait_for_b(s, bus_a, bus_b)
        stopped = await asyncio.wait_for(cut.a_stopped, DEADLINE)
        b_began = await began(bus_b)
        overlap = b_began < stopped.realtime or cut.b_started.monotonic < stopped.monotonic
        assert not overlap, "the unit ran on both machines"
        # A is still cut off, its fleetd still runs, fenced, and keeps nothing running
        assert await active_state(bus_a) in STOPPED
        assert s.a.proc.returncode is None, s.a.log_text()[-2000:]
        assert "agent.fencing" in s.a.log_text()
        report(
            "netns partition (link down), fencing on",
            f"A stopped its unit {stopped.monotonic - cut.at:.2f} s after the link went down, "
            f"B started it {cut.b_started.monotonic - cut.at:.2f} s after; gap between A's stop "
            f"and B's start {b_began - stopped.realtime:.2f} s (A's stop signal vs B's systemd "
            "start time); 0 s running twice",
        )


async def test_link_down_without_fencing_measures_the_double_running_window(
    link: Link, etcd_on_link: EtcdOnLink, tmp_path: Path
) -> None:
    async with (
        partitionable(link, etcd_on_link, tmp_path, fence=False) as s,
        systemd_of(s.a.machine) as bus_a,
        systemd_of(s.b.machine) as bus_b,
    ):
        cut = await cut_and_wait_for_b(s, bus_a, bus_b)
        assert not cut.a_stopped.done() and await active_state(bus_a) == "active"
        healed = time.monotonic()
        s.link.up()  # A reaches etcd again: its lease is gone, the unit is B's now
        stopped = await asyncio.wait_for(cut.a_stopped, HEAL_DEADLINE)
        b_began = await began(bus_b)
        assert stopped.realtime > b_began  # without fencing it did run twice
        await until(s.registry, lambda snap: active_on(snap, UNIT) == {s.b.machine.machine_id})
        assert s.a.proc.returncode is None, s.a.log_text()[-2000:]
        report(
            "netns partition (link down), fencing off",
            f"B started the unit {cut.b_started.monotonic - cut.at:.2f} s after the link went "
            f"down; the link was up again {healed - cut.at:.2f} s after and A stopped its copy "
            f"{stopped.monotonic - healed:.2f} s later: ran twice for "
            f"{stopped.realtime - b_began:.2f} s (A's stop signal vs B's systemd start time)",
        )
