"""A local fleet cluster: a real etcd and N namespaced machines, each running a real fleetd.

Every machine is a `systemd --user` in its own mount namespace (fleetd/sandbox/machine.py) with
its own machine ID, /run (units dir, journal sockets) and journal, its own public IP (127.0.0.x),
metadata and, optionally, size (memory and CPUs its cgroups allow, which its fleetd measures:
sizes.py); its fleetd runs *inside* that namespace and serves the API on a socket in the
sandbox directory, so `fleetctl` on the host reaches it. Everything the sandbox started is
recorded in `<dir>/sandbox.json`, so `status`, `kill`, `down`... work from any shell, and every
process is stopped by PID (or by the machine's cgroup, which holds every process of a machine).

This module is the commands (`add` joins one more machine to a running sandbox, with another
fleetd program if asked); what they stand on is apart: the state file (state.py), bringing one
machine up and down (boot.py), the machines' sizes (sizes.py), the peers' certificates
(peers.py), etcd (etcd.py, tls.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from fleetd.registry import EtcdConfig
from fleetd.sandbox.boot import boot, kill_machine, machine_of, size_of, socket_of, start_fleetd
from fleetd.sandbox.etcd import EtcdServer, free_ports
from fleetd.sandbox.machine import slice_name
from fleetd.sandbox.peers import add_peer, make_peer_pki
from fleetd.sandbox.process import pid_alive, stop_pid
from fleetd.sandbox.sizes import Size, check_host, host_capacity, host_cgroups, limit_cgroups
from fleetd.sandbox.state import MachineRecord, SandboxError, SandboxState, default_dir
from fleetd.sandbox.tls import FLEET_USER, SandboxTLS, prepare_tls, secure_etcd

# MachineRecord, SandboxState and SandboxError live in state.py; callers take them from here,
# with the commands that return and raise them
__all__ = [
    "MachineRecord",
    "Sandbox",
    "SandboxError",
    "SandboxState",
    "default_dir",
    "run_in_machine",
]

log = structlog.get_logger(__name__)

ROLES = ("web", "db", "misc")


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
        return socket_of(self.dir, record)

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
            line = f"{r.name}\t{r.id}\t{r.ip}\t{md}\tmachine {systemd}\tfleetd {fleetd}"
            if r.fleetd:
                line += f" ({r.fleetd})"
            size = size_of(r).words()
            lines.append(f"{line}\t{size}" if size else line)
        lines.append(f"export FLEETCTL_ENDPOINT={self.endpoint()}")
        return lines

    # ---- life cycle

    async def up(
        self,
        machines: int = 3,
        metadata: Sequence[str] | None = None,
        agent_ttl: float = 5.0,
        tls: bool = False,
        sizes: Sequence[Size] = (),
    ) -> SandboxState:
        """Start etcd and `machines` machines, machine mN with the Nth `metadata` and the Nth
        of `sizes` (`sizes_of`: the rest get none)."""
        _require_tls_extra(tls)
        _preflight()
        limits = self._limits(machines, sizes)
        existing = self.state
        if existing is not None:
            if existing.tls != tls:
                have, want = ("with", "without") if existing.tls else ("without", "with")
                raise SandboxError(
                    f"the sandbox at {self.dir} runs {have} --tls; `fleetd sandbox down` "
                    f"first to start one {want} it"
                )
            if sizes and [size_of(r) for r in existing.machines] != list(sizes):
                raise SandboxError(
                    f"the sandbox at {self.dir} runs with other machine sizes; "
                    "`fleetd sandbox down` first to start one with these"
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
            size = sizes[i] if i < len(sizes) else Size()
            state.machines.append(
                MachineRecord(
                    name,
                    os.urandom(16).hex(),
                    f"127.0.0.{11 + i}",
                    md,
                    self._cgroup_name(name),
                    memory=size.memory,
                    cpus=size.cpus,
                    reserved_memory=size.reserved_memory,
                    reserved_cpu=size.reserved_cpu,
                    limits=limits[i],
                )
            )
        state.save()
        try:
            await asyncio.to_thread(make_peer_pki, self.dir, state.machines)
            if secure is not None:
                await asyncio.to_thread(secure_etcd, etcd, secure)
            await asyncio.gather(*(boot(self.dir, state, r) for r in state.machines))
        except BaseException:
            await self.down()
            raise
        return state

    def _cgroup_name(self, name: str) -> str:
        """The machine's cgroup name: unique per sandbox directory, so sandboxes coexist."""
        return f"{self.tag}{name}"

    def _limits(self, machines: int, sizes: Sequence[Size]) -> list[dict[str, dict[str, str]]]:
        """Each machine's limit cgroups (sizes.py), after checking the machine count and that
        this host has the sizes and the controllers to enforce them; nothing is made yet."""
        if machines < 1 or machines > 200:
            raise SandboxError("--machines must be between 1 and 200")
        if len(sizes) > machines:
            raise SandboxError(f"{len(sizes)} machine sizes for {machines} machines")
        if not any(size.limited for size in sizes):
            return [{} for _ in range(machines)]
        check_host(sizes, *host_capacity(self.dir.parent))
        host = host_cgroups()
        limits = []
        for i in range(machines):
            size = sizes[i] if i < len(sizes) else Size()
            limits.append(limit_cgroups(slice_name(self._cgroup_name(f"m{i + 1}")), size, host))
        return limits

    async def down(self) -> None:
        """Stop every machine (fleetd, systemd, units) and etcd; remove the directory."""
        state = self.state
        if state is None:
            if self.dir.exists() and not any(self.dir.iterdir()):
                self.dir.rmdir()
            return
        await asyncio.gather(*(kill_machine(self.dir, r) for r in state.machines))
        stop_pid(state.etcd_pid)
        shutil.rmtree(self.dir, ignore_errors=True)
        log.info("sandbox.down", dir=str(self.dir))

    async def add(
        self,
        metadata: str | None = None,
        fleetd: str | None = None,
        mount_namespace: str | None = None,
    ) -> MachineRecord:
        """One more machine, joined to the running sandbox as `up` joins its own (its systemd,
        the sandbox's etcd, a certificate of its peer CA, the next name and IP), with the
        `metadata` given (default: as `up` would give it). `fleetd`: the program it runs as its
        fleetd, an absolute path inside the machine (default: this Python's); `mount_namespace`:
        a mount namespace (/proc/PID/ns/mnt) the machine's own is made from (machine.py). Bad
        input is refused before anything starts; a machine that does not join is removed."""
        state = self._require_state()
        if state.tls:
            raise SandboxError(
                "`fleetd sandbox add` cannot join a --tls sandbox: etcd's client certificates "
                "are made by `up` alone"
            )
        if not pid_alive(state.etcd_pid):
            raise SandboxError(f"the etcd of the sandbox at {self.dir} is not running")
        index = len(state.machines)
        if index >= 200:
            raise SandboxError("a sandbox has 200 machines at most")
        name = f"m{index + 1}"
        md = {"machine": name, "role": ROLES[index % len(ROLES)]}
        if metadata:
            md = _parse_metadata(metadata)
        await asyncio.to_thread(_check_machine_program, fleetd, mount_namespace)
        record = MachineRecord(
            name, os.urandom(16).hex(), f"127.0.0.{11 + index}", md, self._cgroup_name(name),
            fleetd=fleetd or "", mount_namespace=mount_namespace or "",
        )  # fmt: skip
        await asyncio.to_thread(add_peer, self.dir, record)
        state.machines.append(record)
        state.save()
        try:
            await boot(self.dir, state, record)
        except BaseException:
            await kill_machine(self.dir, record)
            state.machines.remove(record)
            state.save()
            raise
        log.info("sandbox.machine_added", machine=name, id=record.id, fleetd=fleetd or "")
        return record

    async def kill(self, which: str) -> MachineRecord:
        """The machine dies: its fleetd, its systemd and every unit process."""
        state = self._require_state()
        record = self.find(which)
        await kill_machine(self.dir, record)
        record.systemd_pid = record.fleetd_pid = 0
        state.save_record(record)
        return record

    async def start(self, which: str) -> MachineRecord:
        """Bring a killed machine back, with the same machine ID."""
        state = self._require_state()
        record = self.find(which)
        if record.systemd_pid and pid_alive(record.systemd_pid):
            raise SandboxError(
                f"{record.name} is running; `fleetd sandbox kill {record.name}` first"
            )
        await boot(self.dir, state, record)
        state.save_record(record)
        return record

    async def restart(self, which: str) -> MachineRecord:
        """Restart only the machine's fleetd (SIGTERM, then start again): units keep running."""
        state = self._require_state()
        record = self.find(which)
        if not (record.systemd_pid and pid_alive(record.systemd_pid)):
            raise SandboxError(f"{record.name} is down; use `fleetd sandbox start {record.name}`")
        stop_pid(record.fleetd_pid)
        machine = machine_of(self.dir, record).attach(record.systemd_pid)
        await start_fleetd(self.dir, state, record, machine)
        state.save_record(record)
        return record

    def exec_argv(self, which: str, argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """How to run `argv` inside a machine (its namespace, environment, cgroup)."""
        record = self.find(which)
        if not (record.systemd_pid and pid_alive(record.systemd_pid)):
            raise SandboxError(f"{record.name} is down")
        machine = machine_of(self.dir, record).attach(record.systemd_pid)
        bin_dir = str(Path(sys.executable).parent)  # fleetctl and fleetd, as installed
        env = machine.env(
            {
                "FLEETCTL_ENDPOINT": f"unix://{self.socket_of(record)}",
                "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            }
        )
        return machine.command(list(argv)), env


def _parse_metadata(text: str) -> dict[str, str]:
    from fleetd.config import parse_metadata

    try:
        return parse_metadata(text)
    except ValueError as err:
        raise SandboxError(f"--metadata {text!r}: {err}") from None


def _check_machine_program(fleetd: str | None, mount_namespace: str | None) -> None:
    """`add`'s --mount-namespace must be a mount namespace and --fleetd an executable, as the
    machine will see it (inside that namespace, when there is one)."""
    enter = ["nsenter", f"--mount={mount_namespace}", "--"] if mount_namespace else []
    if mount_namespace:
        done = subprocess.run([*enter, "true"], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SandboxError(
                f"--mount-namespace {mount_namespace}: not a mount namespace to enter "
                f"({done.stderr.strip()})"
            )
    if fleetd is None:
        return
    if not os.path.isabs(fleetd):
        raise SandboxError(f"--fleetd {fleetd}: an absolute path, please (as the machine sees it)")
    if subprocess.run([*enter, "test", "-f", fleetd, "-a", "-x", fleetd], check=False).returncode:
        where = f" in the mount namespace {mount_namespace}" if mount_namespace else ""
        raise SandboxError(f"--fleetd {fleetd}: no executable file there{where}")


def _require_tls_extra(tls: bool) -> None:
    """Every sandbox makes certificates with `cryptography` (pki.py), the 'tls' extra: its peers'
    mutual TLS, and etcd's with --tls. Without it, say so before anything is made or started."""
    if importlib.util.find_spec("cryptography") is not None:
        return
    command, why = ("up --tls", "") if tls else ("up", " (its machines talk over mutual TLS)")
    raise SandboxError(
        f"fleetd sandbox {command} needs the 'tls' extra{why}: pip install 'fleetd[tls]'"
    )


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


def run_in_machine(sandbox: Sandbox, which: str, argv: Sequence[str]) -> int:
    if argv and argv[0] == "--":
        argv = argv[1:]
    command, env = sandbox.exec_argv(which, argv)
    return subprocess.run(command, env=env, check=False).returncode
