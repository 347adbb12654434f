"""In-process clusters for the fault tests that need to stand between a machine and etcd.

Each Node is the agent half of a fleetd (a real namespaced `systemd --user` machine, the real
SystemdManager and Agent) with a Registry of its own, so one machine can reach etcd through a
TCPProxy the test controls (a partition) while the others reach it directly. The engine runs in
the test's loop too (tests/running.py). Everything is waited for with events and deadlines;
nothing sleeps. The agent shell tests (tests/agent) use the same Node.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass

from fleetd.agent import Agent
from fleetd.model import Machine as MachineDoc
from fleetd.registry import Registry
from fleetd.sandbox.machine import Machine
from fleetd.systemd import SystemdManager
from fleetd.systemd.dbus import UNIT_IFACE
from fleetd.unit import parse_unit
from tests.running import cancelled

LOOP = parse_unit(
    "[Unit]\nDescription=fault loop\n\n[Service]\nExecStart=/bin/sh -c 'while true; do sleep 1; done'\n"
)


class Node:
    """One machine: namespaced systemd, its adapter and an agent on `registry` (the parts of a
    fleetd). start() starts the machine too, unless it runs already."""

    def __init__(
        self,
        name: str,
        registry: Registry,
        ttl: int,
        ip: str,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.machine = Machine(f"{name}{os.getpid() % 10000}")
        self.registry = registry
        self.ttl = ttl
        self.doc = MachineDoc(self.machine.machine_id, ip, metadata or {})
        self.manager: SystemdManager | None = None
        self.agent: Agent | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return self.doc.id

    async def start(self, **agent_args: object) -> Node:
        if not self.machine.running:
            await self.machine.start()
        self.manager = SystemdManager(self.machine.systemd_config())
        await self.manager.start()
        self.agent = Agent(
            self.registry,
            self.manager,
            self.doc,
            ttl=self.ttl,
            runtime_dir=self.machine.root / "fleet",
            **agent_args,
        )
        self.task = asyncio.create_task(self.agent.run())
        await asyncio.wait_for(self.agent.registered.wait(), 30)
        return self

    async def crash(self) -> None:
        """fleetd dies without any goodbye (as kill -9): systemd and the units live on, and
        start() brings a new fleetd up on the same machine."""
        if self.task is not None and not self.task.done():
            await cancelled(self.task)
        if self.manager is not None:
            await self.manager.close()
            self.manager = None  # closed once: stop() after crash() closes nothing twice

    async def stop(self) -> None:
        """fleetd dies, then the machine is stopped and its root removed."""
        await self.crash()
        with contextlib.suppress(Exception):
            await self.machine.stop()
        self.machine.remove()

    async def timestamp(self, unit: str, prop: str) -> float:
        """A systemd timestamp of the unit (e.g. InactiveEnterTimestamp), in seconds since the
        epoch: systemd's own record of when the state changed, comparable across machines."""
        assert self.manager is not None
        usec = await self.manager._require_bus().get_property(unit, UNIT_IFACE, prop)
        return int(usec) / 1e6


@dataclass
class Transition:
    """The first time a unit reached one of `states` on a machine, as seen from its systemd."""

    monotonic: float
    realtime: float  # time.time() when the change arrived: later than systemd's own record
    active: str


async def first_transition(node: Node, unit: str, states: tuple[str, ...], changes) -> Transition:  # type: ignore[no-untyped-def]
    """Wait on the machine's systemd change stream (opened beforehand) for `unit` in `states`."""
    async for st in changes:
        if st.name == unit and st.active in states:
            return Transition(time.monotonic(), time.time(), st.active)
    raise AssertionError("systemd change stream ended")


class TCPProxy:
    """A loopback TCP forwarder to `target_port`. `cut()` closes the listener and aborts every
    connection (connections are refused, as to a machine whose link went down); `heal()` listens
    again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> TCPProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    heal = start

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._transports |= {writer.transport, up_writer.transport}
        pipes = [
            asyncio.ensure_future(self._pipe(reader, up_writer)),
            asyncio.ensure_future(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in pipes:
                t.cancel()
                self._tasks.discard(t)
            for w in (writer, up_writer):
                w.transport.abort()
                self._transports.discard(w.transport)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    async def close(self) -> None:
        await self.cut()
        for t in list(self._tasks):
            t.cancel()
