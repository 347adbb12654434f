"""A real fleet API for fleetctl to talk to: APIServer on a unix socket, a real Registry on the
session etcd, a real Engine scheduling, three leased machines.

What is not real here: no agent runs systemd. An "agent stand-in" watches the registry and
publishes, for every placed unit, the UnitState its machine's agent would publish (loaded and
dead for desired `loaded`, active and running for `launched`); the API's systemd inspector is a
stand-in answering status and journal for machine M1. End-to-end tests with real machines run
the agent itself (tests/e2e).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fleetd.api.server import APIServer
from fleetd.engine import Engine
from fleetd.model import JobState, Machine, UnitState
from fleetd.registry import Lease, Registry
from tests.cli.fleet_outputs import HELLO_TEXT

# fleet's machines in the captures (tests/cli/fleet_outputs), so outputs compare byte for byte.
# M1 has the lowest ID: an empty cluster's first unit lands there (least-loaded, ties by ID).
M1 = "5ab7f3b47ecc47a0a777884d749db537"
M2 = "929c22af894a4c82b6a758451e974da7"
M3 = "8197e13c2e034e6d9486d5b4c736f323"
MACHINES = {
    M1: ("127.0.0.11", {"role": "web", "machine": "m1"}),
    M2: ("127.0.0.12", {"role": "db", "machine": "m2"}),
    M3: ("127.0.0.13", {"role": "misc", "machine": "m3"}),
}
REPO = Path(__file__).parents[2]
SEED = REPO / "examples" / "seed"


class Inspector:
    """Stand-in for machine M1's systemd: status text and a journal (follow waits forever)."""

    def __init__(self) -> None:
        self.journal_lines = [f"Nov 25 11:36:0{i} vm sh[8548]: Hello World" for i in range(5)]

    async def status(self, name: str) -> str:
        return f"● {name} - Hello World\n     Active: active (running)\n"

    async def _journal(self, lines: int | None, follow: bool) -> AsyncIterator[str]:
        for line in self.journal_lines[-(lines or len(self.journal_lines)) :]:
            yield line
        if follow:
            await asyncio.Event().wait()  # like journalctl -f: nothing more, until cancelled

    def journal(self, name: str, *, lines: int | None = None, follow: bool = False):
        return self._journal(lines, follow)


async def agent_stand_in(registry: Registry, leases: dict[str, Lease]) -> None:
    """Publish the UnitState each placed unit's agent would publish (see module docstring)."""
    snapshot = await registry.snapshot()
    published: dict[tuple[str, str], tuple[str, str]] = {}

    async def sync() -> None:
        want: dict[tuple[str, str], tuple[str, str]] = {}
        for name, machine_id in snapshot.placements.items():
            job = snapshot.jobs.get(name)
            if job is None or job.desired == JobState.INACTIVE:
                continue
            active = "active" if job.desired == JobState.LAUNCHED else "inactive"
            want[(name, machine_id)] = (active, job.unit_hash)
        for (name, mid), (active, unit_hash) in want.items():
            if published.get((name, mid)) != (active, unit_hash) and mid in leases:
                sub = "running" if active == "active" else "dead"
                state = UnitState(name, mid, unit_hash, "loaded", active, sub)
                await registry.publish_state(state, leases[mid])
                published[(name, mid)] = (active, unit_hash)
        for name, mid in set(published) - set(want):
            await registry.remove_state(name, mid)
            del published[(name, mid)]

    await sync()
    async with registry.watch(snapshot.revision + 1) as events:
        async for event in events:
            snapshot = snapshot.apply(event)
            await sync()


@dataclass
class Cluster:
    endpoint: str
    registry: Registry
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)

    async def fleetctl(self, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
        """Run the real fleetctl entry point as a subprocess (the loop keeps serving the API)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fleetd.cli", "--endpoint", self.endpoint, *args,
            cwd=self.workdir, env=self.env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()


def fleetctl_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETCTL_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for the socket (a unix socket path must stay under 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="fctl", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The walkthrough's files in the current directory: apache@.service from the seed, and the
    docker-free hello.service fleet 1.0 ran for the captures (same hash, same outputs)."""
    shutil.copy(SEED / "apache@.service", tmp_path / "apache@.service")
    (tmp_path / "hello.service").write_text(HELLO_TEXT)
    return tmp_path


@pytest.fixture
async def cluster(registry: Registry, sock_dir: Path, workdir: Path) -> AsyncIterator[Cluster]:
    leases = {
        mid: await registry.register_machine(Machine(mid, ip, meta), 30)
        for mid, (ip, meta) in MACHINES.items()
    }
    server = APIServer(registry, M1, inspector=Inspector())
    await server.start(sock_dir / "fleet.sock")
    engine = Engine(registry, M1, lease_ttl=5)
    tasks = [
        asyncio.create_task(engine.run()),
        asyncio.create_task(agent_stand_in(registry, leases)),
    ]
    try:
        yield Cluster(f"unix://{sock_dir}/fleet.sock", registry, workdir, fleetctl_env())
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await server.stop()
        for lease in leases.values():
            with contextlib.suppress(Exception):
                await lease.revoke()
