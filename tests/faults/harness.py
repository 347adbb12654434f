"""A real sandbox cluster driven the way its users drive it, for the fault tests.

The cluster is brought up and torn down with the `fleetd sandbox` command (so every process it
starts belongs to that command, not to pytest's event loop); faults are injected by PID (taken
from sandbox.json) and through the sandbox's own commands. Everything the tests wait for is an
etcd watch event, a process exit (pidfd) or a command's end, each with a deadline; measured
durations are printed, never asserted.
"""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleetd.registry import (
    Changed,
    EtcdConfig,
    Event,
    KeyKind,
    Registry,
    Removed,
    Snapshot,
)
from fleetd.sandbox.cluster import MachineRecord, Sandbox, SandboxError, SandboxState
from tests.waiting import put, until

BIN = Path(sys.executable).parent
SLACK = 10.0  # seconds added to every deadline: a bound against hanging, not a speed goal
COMMAND_TIMEOUT = 120.0

LOOP_UNIT = "[Unit]\nDescription={description}\n\n[Service]\nExecStart=/bin/sh -c 'while true; do sleep 1; done'\n"


def report(scenario: str, figure: str) -> None:
    """Print a measured figure (`pytest -s` shows it; docs/reliability.md collects them)."""
    print(f"\nFIGURE {scenario}: {figure}", flush=True)


@dataclass(frozen=True, slots=True)
class UnitProcess:
    """What a machine's systemd says of a unit: the same invocation means it never restarted."""

    active: str
    main_pid: int
    invocation: str


class Cluster:
    """A sandbox at `directory`: its state file, its machines, fleetctl against each machine."""

    def __init__(self, directory: Path, agent_ttl: float) -> None:
        self.dir = directory
        self.agent_ttl = agent_ttl
        self.sandbox = Sandbox(directory)
        self.units_dir = directory / "unit-files"
        self.units_dir.mkdir(exist_ok=True)

    # ---- state

    @property
    def state(self) -> SandboxState:
        state = self.sandbox.state
        assert state is not None, f"no sandbox at {self.dir}"
        return state

    def machine(self, name: str) -> MachineRecord:
        return self.sandbox.find(name)

    def by_id(self, machine_id: str) -> MachineRecord:
        return next(r for r in self.state.machines if r.id == machine_id)

    def others(self, name: str) -> list[MachineRecord]:
        return [r for r in self.state.machines if r.name != name]

    def etcd_config(self) -> EtcdConfig:
        return EtcdConfig(endpoints=[f"127.0.0.1:{self.state.etcd_port}"], request_timeout=5.0)

    def registry(self) -> Registry:
        """A Registry on the sandbox's etcd: `async with cluster.registry() as registry:`."""
        return Registry(self.etcd_config())

    # ---- commands

    def sandbox_command(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        """`fleetd sandbox COMMAND --dir D ARGS...`, which must succeed."""
        done = subprocess.run(
            [BIN / "fleetd", "sandbox", command, "--dir", str(self.dir), *args],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, f"fleetd sandbox {command} {args}: {done.stderr}"
        return done

    def fleetctl(
        self, machine: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """The real fleetctl against `machine`'s API socket."""
        env = dict(
            os.environ,
            PATH=f"{BIN}:{os.environ['PATH']}",
            FLEETCTL_ENDPOINT=f"unix://{self.sandbox.socket_of(self.machine(machine))}",
        )
        done = subprocess.run(
            [BIN / "fleetctl", *args],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
            env=env,
            cwd=self.units_dir,
        )
        if check:
            assert done.returncode == 0, f"fleetctl {' '.join(args)}: {done.stdout}{done.stderr}"
        return done

    def run_in(self, machine: str, *argv: str) -> subprocess.CompletedProcess[str]:
        """`argv` inside the machine (its namespace, environment and cgroup)."""
        command, env = self.sandbox.exec_argv(machine, argv)
        return subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )

    def unit_process(self, machine: str, unit: str) -> UnitProcess:
        out = self.run_in(
            machine,
            "systemctl",
            "show",
            "-p",
            "ActiveState",
            "-p",
            "MainPID",
            "-p",
            "InvocationID",
            unit,
        ).stdout
        props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        return UnitProcess(
            props.get("ActiveState", ""),
            int(props.get("MainPID") or 0),
            props.get("InvocationID", ""),
        )

    def write_unit(self, name: str, text: str | None = None, *, x_fleet: str = "") -> str:
        body = text if text is not None else LOOP_UNIT.format(description=name)
        if x_fleet:
            body += f"\n[X-Fleet]\n{x_fleet}\n"
        (self.units_dir / name).write_text(body)
        return name

    def log_of(self, machine: str) -> str:
        return (self.dir / machine / "fleetd.log").read_text(errors="replace")


@contextmanager
def sandbox_up(
    directory: Path,
    *,
    machines: int = 3,
    agent_ttl: float = 3.0,
    metadata: Sequence[str] = (),
    up_args: Sequence[str] = (),
    keep_logs: Callable[[], Path | None] | None = None,
) -> Iterator[str]:
    """`fleetd sandbox up` in `directory`, and `fleetd sandbox down` afterwards whatever
    happened; the value is what `up` printed (the environment it tells its user to export).
    `metadata`: each machine's `k=v,...` in order (default: machine=mN and a role cycling
    web/db/misc); `up_args`: more flags of `up` (`--memory=1G,2G`, ...). The fault, end-to-end
    and dashboard tests all bring their sandboxes up through here.

    `down` deletes the directory and the machines' journals die with them: when `keep_logs`
    (see `logs_on_failure`) names a directory at the end, what is needed to tell what happened
    is copied there first (`keep_sandbox_logs`)."""
    try:
        up = subprocess.run(
            [
                BIN / "fleetd",
                "sandbox",
                "up",
                "--dir",
                str(directory),
                "--machines",
                str(machines),
                "--agent-ttl",
                f"{agent_ttl:g}s",
                *(f"--metadata={md}" for md in metadata),
                *up_args,
            ],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        assert up.returncode == 0, up.stderr
        yield up.stdout
    finally:
        kept = keep_logs() if keep_logs is not None else None
        if kept is not None:
            keep_sandbox_logs(directory, kept)
        subprocess.run(
            [BIN / "fleetd", "sandbox", "down", "--dir", str(directory)],
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )


def keep_sandbox_logs(directory: Path, to: Path) -> None:
    """Copy a running sandbox's logs to `to`: sandbox.json, etcd.log, each machine's fleetd.log,
    and each machine's journal with every field (`journalctl -o verbose`, read inside the machine:
    its journald keeps it in the machine's own /run). A machine that is down gets a note instead
    of its journal."""
    to.mkdir(parents=True, exist_ok=True)
    for name in ("sandbox.json", "etcd.log"):
        if (directory / name).is_file():
            shutil.copy(directory / name, to / name)
    state = Sandbox(directory).state
    for record in state.machines if state is not None else []:
        if (directory / record.name / "fleetd.log").is_file():
            shutil.copy(directory / record.name / "fleetd.log", to / f"{record.name}-fleetd.log")
        journal = to / f"{record.name}-journal.txt"
        try:
            command, env = Sandbox(directory).exec_argv(
                record.name, ["journalctl", "--no-pager", "--output", "verbose"]
            )
        except SandboxError as err:
            journal.write_text(f"no journal: {err}\n")
            continue
        with journal.open("wb") as out:
            subprocess.run(
                command, env=env, stdout=out, stderr=subprocess.STDOUT,
                timeout=COMMAND_TIMEOUT, check=False,
            )  # fmt: skip


def logs_on_failure(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[], Path | None]:
    """For `sandbox_up(keep_logs=...)` in a module-scoped fixture: at teardown, the directory to
    keep the sandbox's logs in when a test failed meanwhile, else None. That is
    `$FLEETD_SANDBOX_LOGS/<module>` when the variable is set (a loop of runs can gather them),
    or `sandbox-logs/<module>` in pytest's base temporary directory; the path is printed."""
    failed_before = request.session.testsfailed

    def where() -> Path | None:
        if request.session.testsfailed == failed_before:
            return None
        base = os.environ.get("FLEETD_SANDBOX_LOGS")
        root = Path(base) if base else tmp_path_factory.getbasetemp() / "sandbox-logs"
        kept = root / request.module.__name__
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"sandbox logs of {request.module.__name__} kept in {kept}")
        return kept

    return where


def sandbox_env(up_out: str) -> dict[str, str]:
    """The environment `fleetd sandbox up` tells its user to export, with this venv's fleetctl
    first on PATH."""
    export = next(
        line for line in up_out.splitlines() if line.startswith("export FLEETCTL_ENDPOINT=")
    )
    return dict(
        os.environ, PATH=f"{BIN}:{os.environ['PATH']}", FLEETCTL_ENDPOINT=export.split("=", 1)[1]
    )


@pytest.fixture(scope="module")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """One sandbox for the whole test module, shared by its tests (bringing one up takes
    seconds): the module's MACHINES machines (default 3) with its AGENT_TTL (default 3 s), so
    the value a module's deadlines are computed from is the one the sandbox runs with, and
    its METADATA (each machine's `k=v,...`; default machine=mN and a role web/db/misc).

    The fault modules get it from tests/faults/conftest.py, the end-to-end ones from
    tests/e2e/conftest.py."""
    machines = getattr(request.module, "MACHINES", 3)
    agent_ttl = getattr(request.module, "AGENT_TTL", 3.0)
    metadata = getattr(request.module, "METADATA", ())
    directory = tmp_path_factory.mktemp("faults")
    keep_logs = logs_on_failure(request, tmp_path_factory)
    with sandbox_up(
        directory, machines=machines, agent_ttl=agent_ttl, metadata=metadata, keep_logs=keep_logs
    ):
        yield Cluster(directory, agent_ttl)


# ---- processes


def signal_and_wait(pid: int, sig: signal.Signals | None, deadline: float = SLACK) -> float:
    """Send `sig` (None: none) to `pid` and wait on its pidfd until it has exited; seconds."""
    fd = os.pidfd_open(pid)
    try:
        start = time.monotonic()
        if sig is not None:
            signal.pidfd_send_signal(fd, sig)
        ready, _, _ = select.select([fd], [], [], deadline)
        assert ready, f"pid {pid} still runs {deadline}s after {sig.name if sig else 'waiting'}"
        return time.monotonic() - start
    finally:
        os.close(fd)


# ---- registry


def active_on(snapshot: Snapshot, unit: str) -> set[str]:
    """Machines whose agent reports `unit` active."""
    return {m for (name, m), s in snapshot.states.items() if name == unit and s.active == "active"}


def placed_on(snapshot: Snapshot, unit: str) -> str | None:
    return snapshot.placements.get(unit)


def placed_and_running(names: Sequence[str], count: int) -> Callable[[Snapshot], bool]:
    """`count` of `names` are placed and active where placed (and no more are placed): for
    units some of which may never find a machine."""

    def check(snapshot: Snapshot) -> bool:
        placed = [n for n in names if placed_on(snapshot, n) is not None]
        return len(placed) == count and all(
            placed_on(snapshot, n) in active_on(snapshot, n) for n in placed
        )

    return check


def running_elsewhere(unit: str, dead: str) -> Callable[[Snapshot], bool]:
    """The unit is placed on a machine other than `dead` and that machine reports it active."""

    def check(snapshot: Snapshot) -> bool:
        where = placed_on(snapshot, unit)
        return where is not None and where != dead and where in active_on(snapshot, unit)

    return check


async def collect_until(
    registry: Registry, from_revision: int, done: Callable[[Event], bool], deadline: float
) -> list[Event]:
    """Every event from `from_revision` up to and including the first for which `done` holds."""
    seen: list[Event] = []

    async def follow() -> list[Event]:
        async with registry.watch(from_revision) as events:
            async for event in events:
                seen.append(event)
                if done(event):
                    return seen
        raise AssertionError("the watch ended")

    return await asyncio.wait_for(follow(), deadline)


async def first_event(
    registry: Registry, from_revision: int, match: Callable[[Event], bool], within: float
) -> Event | None:
    """The first matching event within `within` seconds, or None when there is none."""
    try:
        events = await collect_until(registry, from_revision, match, within)
    except TimeoutError:
        return None
    return events[-1]


def moves_of(events: list[Event], units: set[str]) -> list[Event]:
    """Placement changes (schedule written or removed) of `units` among `events`."""
    return [
        e
        for e in events
        if isinstance(e, Changed | Removed) and e.kind is KeyKind.SCHEDULE and e.ident in units
    ]


def state_is(unit: str, machine_id: str, active: str) -> Callable[[Event], bool]:
    def check(event: Event) -> bool:
        return put(KeyKind.STATE, (unit, machine_id))(event) and event.doc.active == active

    return check


async def machine_lease(registry: Registry, machine_id: str) -> int:
    """The lease holding the machine's key (0 when the machine is not registered)."""
    _, kv = await registry.etcd.get(registry.keys.machine(machine_id))
    return kv.lease if kv is not None else 0


async def start_units(
    cluster: Cluster, registry: Registry, names: list[str], via: str = "m1"
) -> Snapshot:
    """`fleetctl start` the (already written) units; the view once each runs where placed."""
    cluster.fleetctl(via, "start", *names)

    def all_running(snapshot: Snapshot) -> bool:
        return all(placed_on(snapshot, n) in active_on(snapshot, n) for n in names)

    return await until(registry, all_running, cluster.agent_ttl + SLACK)


def local_units(snapshot: Snapshot, machine_id: str) -> set[str]:
    return {name for name, m in snapshot.placements.items() if m == machine_id}
