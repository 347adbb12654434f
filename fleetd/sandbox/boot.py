"""Bringing one sandbox machine up and down, for the commands of `Sandbox` (cluster.py).

Up is two steps because `restart` does only the second: the machine's `systemd --user`
(machine.py), then its fleetd (this Python's, or the program `add --fleetd` named), run inside
the machine (namespace, environment, cgroup) with flags that give it the sandbox's etcd, its IP,
metadata and reservations, an API socket the host's fleetctl reaches (`<dir>/mN/fleet.sock`)
and its peer certificate (peers.py). A machine
is up once its fleetd has registered, not once the process exists: that is when fleetctl lists
it. Each PID goes to the state file as soon as it exists, so `down` stops what a failed `up`
left behind.
Down is the machine's cgroup killed whole: fleetd, systemd and every unit process.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from fleetd.registry import Changed, KeyKind, Registry
from fleetd.sandbox.machine import Machine
from fleetd.sandbox.peers import peer_tls_flags
from fleetd.sandbox.sizes import Size
from fleetd.sandbox.state import MachineRecord, SandboxError, SandboxState

__all__ = [
    "READY_TIMEOUT",
    "boot",
    "kill_machine",
    "machine_of",
    "size_of",
    "socket_of",
    "start_fleetd",
]

log = structlog.get_logger(__name__)

READY_TIMEOUT = 60.0  # seconds for a fleetd to register


def machine_of(directory: Path, record: MachineRecord) -> Machine:
    """The machine of `record` (not attached: `.attach(record.systemd_pid)` for a running one)."""
    return Machine(
        record.cgroup_name, record.id, root=directory / record.name, limits=record.limits,
        mount_namespace=record.mount_namespace or None,
    )  # fmt: skip


def socket_of(directory: Path, record: MachineRecord) -> Path:
    """Where the machine's fleetd serves its API to the host."""
    return directory / record.name / "fleet.sock"


async def boot(directory: Path, state: SandboxState, record: MachineRecord) -> None:
    """Start the machine's systemd, then its fleetd, and wait until fleetd has joined."""
    machine = machine_of(directory, record)
    await machine.start()
    record.systemd_pid = machine.systemd_pid
    state.save()
    await start_fleetd(directory, state, record, machine)


async def start_fleetd(
    directory: Path, state: SandboxState, record: MachineRecord, machine: Machine
) -> None:
    """Start the fleetd of a running machine; return once it has registered."""

    async def launch() -> asyncio.subprocess.Process:
        with (directory / record.name / "fleetd.log").open("ab") as logf:
            proc = await machine.exec(
                *fleetd_command(record),
                *fleetd_flags(directory, state, record, machine),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logf,
                stderr=logf,
                start_new_session=True,
            )
        record.fleetd_pid = proc.pid
        state.save()
        return proc

    async with Registry(state.etcd_config()) as registry:
        _, why = await start_and_join(registry, record.id, launch, READY_TIMEOUT)
    if why is not None:
        raise SandboxError(
            f"fleetd of {record.name} {why}; see {directory / record.name / 'fleetd.log'}"
        )
    log.info("sandbox.machine_up", machine=record.name, id=record.id, ip=record.ip)


async def start_and_join(
    registry: Registry,
    machine_id: str,
    launch: Callable[[], Awaitable[asyncio.subprocess.Process]],
    within: float,
) -> tuple[asyncio.subprocess.Process, str | None]:
    """Start a fleetd (`launch`) and wait, `within` seconds at most, until it has registered
    `machine_id` (its machine key written after the launch, by a watch) or has exited first:
    the process, and None or why it did not join ("exited", "did not join within N s")."""
    snapshot = await registry.snapshot()
    joined = asyncio.ensure_future(_until_machine_up(registry, machine_id, snapshot.revision + 1))
    try:
        proc = await launch()
    except BaseException:
        joined.cancel()
        raise
    died = asyncio.ensure_future(proc.wait())
    try:
        done, _ = await asyncio.wait(
            {joined, died}, timeout=within, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in (joined, died):
            task.cancel()
    if joined in done:
        return proc, None
    return proc, "exited" if died in done else f"did not join within {within:g} s"


def fleetd_command(record: MachineRecord) -> list[str]:
    """The fleetd the machine runs: the one `add --fleetd` gave it, else this Python's."""
    return [record.fleetd] if record.fleetd else [sys.executable, "-m", "fleetd.main"]


def fleetd_flags(
    directory: Path, state: SandboxState, record: MachineRecord, machine: Machine
) -> list[str]:
    md = ",".join(f"{k}={v}" for k, v in sorted(record.metadata.items()))
    secure = state.secure.fleetd_flags(record.name) if state.secure else []
    return [
        f"--etcd-servers={state.etcd_url}",
        *secure,
        f"--public-ip={record.ip}",
        f"--metadata={md}",
        f"--agent-ttl={state.agent_ttl}",
        f"--engine-ttl={state.agent_ttl}",  # a dead leader is replaced as fast as a machine
        f"--dbus-address={machine.bus_address}",
        "--units-directory=/run/fleet/units",
        "--runtime-dir=/run/fleet",
        f"--api-socket={socket_of(directory, record)}",
        f"--peer-port={state.peer_port}",
        *peer_tls_flags(directory, record.name),
        "--machine-id-file=/etc/machine-id",
        *size_of(record).fleetd_flags(),
    ]


def size_of(record: MachineRecord) -> Size:
    """The size `up` gave the machine."""
    return Size(record.memory, record.cpus, record.reserved_memory, record.reserved_cpu)


async def kill_machine(directory: Path, record: MachineRecord) -> None:
    """The machine dies: its fleetd, its systemd and every unit process."""
    machine = machine_of(directory, record)
    if record.systemd_pid:
        machine.attach(record.systemd_pid)
    await machine.kill()


async def _until_machine_up(registry: Registry, machine_id: str, revision: int) -> None:
    """Until the machine (re-)registers after `revision`: a restarted fleetd re-attaches to its
    live lease and writes its machine key again, so this holds for restarts too."""
    async with registry.watch(revision) as events:
        async for event in events:
            if (
                isinstance(event, Changed)
                and event.ident == machine_id
                and event.kind is KeyKind.MACHINE
            ):
                return
