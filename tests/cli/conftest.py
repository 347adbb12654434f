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
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fleetd.api.server import APIServer
from fleetd.model import JobState, Machine, UnitState
from fleetd.registry import ClusterView, Lease, Registry
from tests.cli.fleet_outputs import HELLO_TEXT
from tests.running import engine_running, running

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
    published: dict[tuple[str, str], tuple[str, str]] = {}

    async def sync(view: ClusterView) -> None:
        want: dict[tuple[str, str], tuple[str, str]] = {}
        for name, machine_id in view.placements.items():
            job = view.jobs.get(name)
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

    async with contextlib.aclosing(registry.follow()) as updates:
        async for update in updates:
            await sync(update.view)


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
    try:
        async with engine_running(registry, M1), running(agent_stand_in(registry, leases)):
            yield Cluster(f"unix://{sock_dir}/fleet.sock", registry, workdir, fleetctl_env())
    finally:
        await server.stop()
        for lease in leases.values():
            with contextlib.suppress(Exception):
                await lease.revoke()


# --- a real sshd on 127.0.0.11 (M1's IP) -------------------------------------------------------
SSHD = "/usr/sbin/sshd"
NO_SSHD = not os.path.exists(SSHD) or shutil.which("ssh-agent") is None
SSHD_IP = "127.0.0.11"


async def _run(*argv: str, **kw) -> None:
    proc = await asyncio.create_subprocess_exec(*argv, **kw)
    assert await proc.wait() == 0, argv


@dataclass
class SSHServer:
    port: int
    env: dict[str, str]  # os.environ with SSH_AUTH_SOCK: an ssh-agent holding the user key
    dir: Path


StartSSHD = Callable[..., Awaitable[SSHServer]]


@pytest.fixture
async def sshd_factory(tmp_path: Path) -> AsyncIterator[StartSSHD]:
    """Starts real sshds on SSHD_IP with generated keys, each with an ssh-agent holding the
    user key. `config` adds sshd_config lines; `binds` ((source, target) directories) run the
    sshd in a mount namespace of its own where each source is bind-mounted on its target, so
    what is there exists only on the "remote" side. Each is stopped by PID at the end."""
    procs: list[asyncio.subprocess.Process] = []
    drains: list[asyncio.Task[None]] = []

    async def start(config: str = "", binds: Sequence[tuple[Path, Path]] = ()) -> SSHServer:
        d = tmp_path / f"ssh{len(procs)}"
        d.mkdir(mode=0o700)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
        for key in ("host", "user"):
            await _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key))
        shutil.copy(d / "user.pub", d / "authorized_keys")
        with socket.socket() as probe:
            probe.bind((SSHD_IP, 0))
            port = probe.getsockname()[1]
        (d / "sshd_config").write_text(
            f"Port {port}\nListenAddress {SSHD_IP}\nHostKey {d / 'host'}\n"
            f"AuthorizedKeysFile {d / 'authorized_keys'}\nPidFile {d / 'sshd.pid'}\n"
            "StrictModes no\nUsePAM no\nPasswordAuthentication no\n" + config
        )
        argv = [SSHD, "-D", "-e", "-f", str(d / "sshd_config")]
        for source, target in binds:  # unshare and sh exec: the PID stays sshd's
            argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                    'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh",
                    str(source), str(target), *argv]  # fmt: skip
        server = await asyncio.create_subprocess_exec(*argv, stderr=asyncio.subprocess.PIPE)
        procs.append(server)
        agent = await asyncio.create_subprocess_exec("ssh-agent", "-D", "-a", str(d / "agent"),
                                                     stdout=asyncio.subprocess.PIPE)  # fmt: skip
        procs.append(agent)
        assert server.stderr is not None and agent.stdout is not None
        while True:  # sshd says when it listens
            line = await asyncio.wait_for(server.stderr.readline(), 30)
            assert line, f"sshd exited: {await server.wait()}"
            if b"Server listening" in line:
                break
        drains.append(asyncio.create_task(_drain(server.stderr)))  # sshd's log: never blocks
        await asyncio.wait_for(agent.stdout.readline(), 30)  # the agent prints its socket
        env = {**os.environ, "SSH_AUTH_SOCK": str(d / "agent")}
        await _run("ssh-add", "-q", str(d / "user"), env=env)
        return SSHServer(port, env, d)

    try:
        yield start
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
        for task in drains:
            task.cancel()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


@pytest.fixture
async def sshd(sshd_factory: StartSSHD) -> tuple[int, dict[str, str]]:
    """A real sshd on 127.0.0.11 (M1's IP) with generated keys; (port, env with an ssh-agent
    holding the user key)."""
    server = await sshd_factory()
    return server.port, server.env
