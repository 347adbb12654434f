"""A local fleet cluster: a real etcd and N namespaced machines, each running a real fleetd.

Every machine is a `systemd --user` in its own mount namespace (fleetd/sandbox/machine.py) with
its own machine ID, /run (units dir, journal sockets) and journal, its own public IP (127.0.0.x)
and metadata; its fleetd runs *inside* that namespace and serves the API on a socket in the
sandbox directory, so `fleetctl` on the host reaches it. Everything the sandbox started is
recorded in `<dir>/sandbox.json`, so `status`, `kill`, `down`... work from any shell, and every
process is stopped by PID (or by the machine's cgroup, which holds every process of a machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from fleetd.errors import PermanentError
from fleetd.model import short_id
from fleetd.registry import Changed, EtcdConfig, KeyKind, Registry
from fleetd.sandbox.etcd import EtcdServer, free_ports
from fleetd.sandbox.machine import Machine, pid_alive
from fleetd.sandbox.tls import FLEET_USER, SandboxTLS, prepare_tls, secure_etcd

__all__ = ["Sandbox", "SandboxError", "default_dir"]

log = structlog.get_logger(__name__)

STATE_FILE = "sandbox.json"
ROLES = ("web", "db", "misc")
READY_TIMEOUT = 60.0


class SandboxError(PermanentError):
    """A sandbox command that cannot be carried out; the message says why and what to do."""


def default_dir() -> Path:
    return Path(os.environ.get("TMPDIR", "/tmp")) / f"fleetd-sandbox-{os.getuid()}"


@dataclass
class MachineRecord:
    name: str  # m1, m2, ...
    id: str
    ip: str
    metadata: dict[str, str]
    cgroup_name: str  # the Machine's name: unique per sandbox, so sandboxes can coexist
    systemd_pid: int = 0
    fleetd_pid: int = 0

    @property
    def legend(self) -> str:
        return f"{short_id(self.id)}.../{self.ip}"


@dataclass
class SandboxState:
    dir: str
    etcd_pid: int
    etcd_port: int
    etcd_peer_port: int
    peer_port: int
    agent_ttl: float
    machines: list[MachineRecord] = field(default_factory=list)
    # --tls: etcd serves https with client certificates and auth; certificates and the etcd
    # credentials (files mode 0600, never this file) live in pki_dir
    tls: bool = False
    pki_dir: str = ""

    @property
    def etcd_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.etcd_port}"

    @property
    def secure(self) -> SandboxTLS | None:
        return SandboxTLS(Path(self.pki_dir)) if self.tls else None

    def etcd_config(self, request_timeout: float = 5.0) -> EtcdConfig:
        endpoint = f"127.0.0.1:{self.etcd_port}"
        if self.secure is None:
            return EtcdConfig(endpoints=[endpoint], request_timeout=request_timeout)
        return self.secure.etcd_config(endpoint, request_timeout)

    def save(self) -> None:
        path = Path(self.dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, directory: Path) -> SandboxState | None:
        try:
            data = json.loads((directory / STATE_FILE).read_text())
        except FileNotFoundError:
            return None
        except ValueError as err:
            raise SandboxError(
                f"{directory / STATE_FILE} is damaged ({err}); remove the directory"
            ) from None
        machines = [MachineRecord(**m) for m in data.pop("machines")]
        return cls(**data, machines=machines)


class Sandbox:
    """Operations on the sandbox living in `directory`."""

    def __init__(self, directory: Path | str | None = None) -> None:
        self.dir = Path(directory or default_dir()).resolve()
        self.tag = "s" + hashlib.sha1(str(self.dir).encode()).hexdigest()[:5]

    # ---- queries

    @property
    def state(self) -> SandboxState | None:
        return SandboxState.load(self.dir)

    def socket_of(self, record: MachineRecord) -> Path:
        return self.dir / record.name / "fleet.sock"

    def endpoint(self, record: MachineRecord | None = None) -> str:
        state = self._require_state()
        return f"unix://{self.socket_of(record or state.machines[0])}"

    def find(self, which: str) -> MachineRecord:
        """A machine by sandbox name (m1), full machine ID or unique ID prefix."""
        state = self._require_state()
        for record in state.machines:
            if which in (record.name, record.id):
                return record
        matches = [r for r in state.machines if which and r.id.startswith(which)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise SandboxError(
                f"{which!r} matches several machines: {', '.join(r.name for r in matches)}"
            )
        raise SandboxError(
            f"no machine {which!r} in the sandbox at {self.dir} "
            f"(machines: {', '.join(r.name for r in state.machines)})"
        )

    def _require_state(self) -> SandboxState:
        state = self.state
        if state is None:
            raise SandboxError(f"no sandbox at {self.dir}: start one with `fleetd sandbox up`")
        return state

    def etcd_config(self, request_timeout: float = 5.0) -> EtcdConfig:
        """How to reach the sandbox's etcd as its fleetds do (with --tls: TLS, user fleet)."""
        return self._require_state().etcd_config(request_timeout)

    def status_lines(self) -> list[str]:
        state = self._require_state()
        etcd = "running" if pid_alive(state.etcd_pid) else "stopped"
        lines = [f"sandbox {self.dir}", f"etcd\t127.0.0.1:{state.etcd_port}\t{etcd}"]
        if state.tls:
            lines[1] = (
                f"etcd\t{state.etcd_url}\t{etcd}\tclient certificates and auth "
                f"(user {FLEET_USER}), certificates and credentials in {state.pki_dir}"
            )
        for r in state.machines:
            systemd = "up" if r.systemd_pid and pid_alive(r.systemd_pid) else "down"
            fleetd = "running" if r.fleetd_pid and pid_alive(r.fleetd_pid) else "stopped"
            md = ",".join(f"{k}={v}" for k, v in sorted(r.metadata.items()))
            lines.append(f"{r.name}\t{r.id}\t{r.ip}\t{md}\tmachine {systemd}\tfleetd {fleetd}")
        lines.append(f"export FLEETCTL_ENDPOINT={self.endpoint()}")
        return lines

    # ---- life cycle

    async def up(
        self,
        machines: int = 3,
        metadata: Sequence[str] | None = None,
        agent_ttl: float = 5.0,
        tls: bool = False,
    ) -> SandboxState:
        _preflight()
        existing = self.state
        if existing is not None:
            if existing.tls != tls:
                have, want = ("with", "without") if existing.tls else ("without", "with")
                raise SandboxError(
                    f"the sandbox at {self.dir} runs {have} --tls; `fleetd sandbox down` "
                    f"first to start one {want} it"
                )
            if pid_alive(existing.etcd_pid) and all(
                pid_alive(r.systemd_pid) and pid_alive(r.fleetd_pid) for r in existing.machines
            ):
                log.info("sandbox.already_up", dir=str(self.dir))
                return existing
            raise SandboxError(
                f"a sandbox at {self.dir} is partly down: run `fleetd sandbox start MACHINE` for "
                f"stopped machines, or `fleetd sandbox down` first"
            )
        if machines < 1 or machines > 200:
            raise SandboxError("--machines must be between 1 and 200")
        metadata = list(metadata or [])
        if len(metadata) > machines:
            raise SandboxError(f"{len(metadata)} --metadata values for {machines} machines")
        self.dir.mkdir(parents=True, exist_ok=True)
        etcd_port, etcd_peer, peer_port = free_ports(3)
        secure = prepare_tls(self.dir, [f"m{i + 1}" for i in range(machines)]) if tls else None
        etcd = _start_detached_etcd(self.dir, etcd_port, etcd_peer, secure)
        state = SandboxState(
            str(self.dir), etcd.pid or 0, etcd_port, etcd_peer, peer_port, agent_ttl
        )
        if secure is not None:
            state.tls, state.pki_dir = True, str(secure.pki_dir)
        for i in range(machines):
            name = f"m{i + 1}"
            md = {"machine": name, "role": ROLES[i % len(ROLES)]}
            if i < len(metadata) and metadata[i]:
                md = _parse_metadata(metadata[i])
            state.machines.append(
                MachineRecord(
                    name, os.urandom(16).hex(), f"127.0.0.{11 + i}", md, f"{self.tag}{name}"
                )
            )
        state.save()
        try:
            await asyncio.to_thread(_make_peer_pki, self.dir, state.machines)
            if secure is not None:
                await asyncio.to_thread(secure_etcd, etcd, secure)
            await asyncio.gather(*(self._boot(state, r) for r in state.machines))
        except BaseException:
            await self.down()
            raise
        return state

    async def _boot(self, state: SandboxState, record: MachineRecord) -> None:
        """Start the machine's systemd, then its fleetd, and wait until fleetd has joined."""
        machine = Machine(record.cgroup_name, record.id, root=self.dir / record.name)
        await machine.start()
        record.systemd_pid = machine.systemd_pid
        state.save()
        await self._start_fleetd(state, record, machine)

    async def _start_fleetd(
        self, state: SandboxState, record: MachineRecord, machine: Machine
    ) -> None:
        async with Registry(state.etcd_config()) as registry:
            snapshot = await registry.snapshot()
            joined = asyncio.ensure_future(
                _until_machine_up(registry, record.id, snapshot.revision + 1)
            )
            logf = (self.dir / record.name / "fleetd.log").open("ab")
            try:
                proc = await machine.exec(
                    sys.executable,
                    "-m",
                    "fleetd.main",
                    *self._fleetd_flags(state, record, machine),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=logf,
                    stderr=logf,
                    start_new_session=True,
                )
            finally:
                logf.close()
            record.fleetd_pid = proc.pid
            state.save()
            died = asyncio.ensure_future(proc.wait())
            try:
                done, _ = await asyncio.wait(
                    {joined, died}, timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for task in (joined, died):
                    task.cancel()
        if joined not in done:
            why = "exited" if died in done else f"did not join within {READY_TIMEOUT:.0f}s"
            raise SandboxError(
                f"fleetd of {record.name} {why}; see {self.dir / record.name / 'fleetd.log'}"
            )
        log.info("sandbox.machine_up", machine=record.name, id=record.id, ip=record.ip)

    def _fleetd_flags(
        self, state: SandboxState, record: MachineRecord, machine: Machine
    ) -> list[str]:
        md = ",".join(f"{k}={v}" for k, v in sorted(record.metadata.items()))
        secure = state.secure.fleetd_flags(record.name) if state.secure else []
        return [
            f"--etcd-servers={state.etcd_url}",
            *secure,
            f"--public-ip={record.ip}",
            f"--metadata={md}",
            f"--agent-ttl={state.agent_ttl}",
            f"--dbus-address={machine.bus_address}",
            "--units-directory=/run/fleet/units",
            "--runtime-dir=/run/fleet",
            f"--api-socket={self.socket_of(record)}",
            f"--peer-port={state.peer_port}",
            *_peer_tls_flags(self.dir, record.name),
            "--machine-id-file=/etc/machine-id",
        ]

    async def down(self) -> None:
        """Stop every machine (fleetd, systemd, units) and etcd; remove the directory."""
        state = self.state
        if state is None:
            if self.dir.exists() and not any(self.dir.iterdir()):
                self.dir.rmdir()
            return
        await asyncio.gather(*(self._kill_machine(r) for r in state.machines))
        _stop_pid(state.etcd_pid)
        shutil.rmtree(self.dir, ignore_errors=True)
        log.info("sandbox.down", dir=str(self.dir))

    async def _kill_machine(self, record: MachineRecord) -> None:
        machine = Machine(record.cgroup_name, record.id, root=self.dir / record.name)
        if record.systemd_pid:
            machine.attach(record.systemd_pid)
        await machine.kill()

    async def kill(self, which: str) -> MachineRecord:
        """The machine dies: its fleetd, its systemd and every unit process."""
        state = self._require_state()
        record = self.find(which)
        await self._kill_machine(record)
        record.systemd_pid = record.fleetd_pid = 0
        _save_record(state, record)
        return record

    async def start(self, which: str) -> MachineRecord:
        """Bring a killed machine back, with the same machine ID."""
        state = self._require_state()
        record = self.find(which)
        if record.systemd_pid and pid_alive(record.systemd_pid):
            raise SandboxError(
                f"{record.name} is running; `fleetd sandbox kill {record.name}` first"
            )
        await self._boot(state, record)
        _save_record(state, record)
        return record

    async def restart(self, which: str) -> MachineRecord:
        """Restart only the machine's fleetd (SIGTERM, then start again): units keep running."""
        state = self._require_state()
        record = self.find(which)
        if not (record.systemd_pid and pid_alive(record.systemd_pid)):
            raise SandboxError(f"{record.name} is down; use `fleetd sandbox start {record.name}`")
        _stop_pid(record.fleetd_pid)
        machine = Machine(record.cgroup_name, record.id, root=self.dir / record.name)
        machine.attach(record.systemd_pid)
        await self._start_fleetd(state, record, machine)
        _save_record(state, record)
        return record

    def exec_argv(self, which: str, argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """How to run `argv` inside a machine (its namespace, environment, cgroup)."""
        record = self.find(which)
        if not (record.systemd_pid and pid_alive(record.systemd_pid)):
            raise SandboxError(f"{record.name} is down")
        machine = Machine(record.cgroup_name, record.id, root=self.dir / record.name)
        machine.attach(record.systemd_pid)
        bin_dir = str(Path(sys.executable).parent)  # fleetctl and fleetd, as installed
        env = machine.env({
            "FLEETCTL_ENDPOINT": f"unix://{self.socket_of(record)}",
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        })
        return machine.command(list(argv)), env


PEER_PKI_DIR = "peer-pki"


def _make_peer_pki(directory: Path, machines: Sequence[MachineRecord]) -> None:
    """The peer listeners' CA and each machine's certificate (SAN its IP), in peer-pki/."""
    from fleetd.sandbox.pki import make_peer_pki  # cryptography: only the sandbox loads it

    make_peer_pki(
        directory / PEER_PKI_DIR,
        {r.name: r.ip for r in machines},
        ca_name=f"fleetd sandbox peers CA {hashlib.sha1(str(directory).encode()).hexdigest()[:8]}",
        days=30,
    )


def _peer_tls_flags(directory: Path, machine: str) -> list[str]:
    """Machine `machine`'s fleetd serves its peer listener, and forwards to the others, with
    its own certificate of the sandbox's peer CA (mutual TLS)."""
    pki = directory / PEER_PKI_DIR
    return [
        f"--api-tls-cert={pki / f'{machine}.pem'}",
        f"--api-tls-key={pki / f'{machine}-key.pem'}",
        f"--api-tls-ca={pki / 'ca.pem'}",
    ]


async def _until_machine_up(registry: Registry, machine_id: str, revision: int) -> None:
    """Until the machine (re-)registers after `revision`: a restarted fleetd re-attaches to its
    live lease and writes its machine key again, so this holds for restarts too."""
    async with registry.watch(revision) as events:
        async for event in events:
            if isinstance(event, Changed) and event.ident == machine_id \
                    and event.kind is KeyKind.MACHINE:
                return


def _save_record(state: SandboxState, record: MachineRecord) -> None:
    state.machines = [record if r.name == record.name else r for r in state.machines]
    state.save()


def _parse_metadata(text: str) -> dict[str, str]:
    from fleetd.config import parse_metadata

    try:
        return parse_metadata(text)
    except ValueError as err:
        raise SandboxError(f"--metadata {text!r}: {err}") from None


def _preflight() -> None:
    if os.geteuid() != 0:
        raise SandboxError(
            "the sandbox needs root: each machine is a systemd --user in its own mount "
            "namespace and cgroup (run as root, e.g. sudo make demo)"
        )
    for tool in ("systemd", "unshare", "nsenter", "journalctl", "systemctl"):
        if shutil.which(tool) is None:
            raise SandboxError(
                f"{tool} is missing: install Debian's systemd and util-linux "
                "(make setup does it as root)"
            )


def _start_detached_etcd(
    directory: Path, port: int, peer_port: int, secure: SandboxTLS | None = None
) -> EtcdServer:
    server = EtcdServer(
        directory / "etcd",
        client_port=port,
        peer_port=peer_port,
        tls=secure.etcd_files() if secure else None,
        detached=True,
    )
    server.start()
    return server


def _stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM `pid` and wait on its pidfd; SIGKILL after `timeout`."""
    if not pid or not pid_alive(pid):
        return
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        signal.pidfd_send_signal(fd, signal.SIGTERM)
        import select

        if not select.select([fd], [], [], timeout)[0]:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            select.select([fd], [], [], timeout)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def run_in_machine(sandbox: Sandbox, which: str, argv: Sequence[str]) -> int:
    if argv and argv[0] == "--":
        argv = argv[1:]
    command, env = sandbox.exec_argv(which, argv)
    return subprocess.run(command, env=env, check=False).returncode
