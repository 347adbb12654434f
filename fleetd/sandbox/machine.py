"""One sandbox "machine": a real `systemd --user` on a private bus, in its own mount namespace.

The recipe (docs/architecture.md, "systemd", says where it departs from the usual one). Per
machine:
- a root directory holding its runtime dir (`$XDG_RUNTIME_DIR`, with the bus at `run/bus`), its
  machine-id file and its persistent journal directory;
- a cgroup `<slice>` under both the `name=systemd` and the unified hierarchy, and optionally the
  cgroups holding its limits (`limits`: memory, CPUs; fleetd/sandbox/sizes.py), set up at every
  start; every process of the machine is moved into each before it execs (or does not run), so
  `kill()` can kill the whole machine and its fleetd measures the limits;
- `systemd --user` in a new mount namespace with a tmpfs on `/run` (private `/run/systemd/system`,
  `/run/fleet/units`, journal sockets), `/etc/machine-id` and `/var/log/journal` bind-mounted from
  the root directory, then `systemd-journald` inside that namespace;
- optionally a network namespace made beforehand (`ip netns add NAME`, `netns="NAME"`): systemd
  is started in it (`nsenter --net=/run/netns/NAME`), and every process of the machine (journald,
  its fleetd, its units, `command()`) lives there too, so the machine can be cut off the network;
- optionally a mount namespace made beforehand (`mount_namespace`, a file such as
  /proc/PID/ns/mnt): the machine's own is made from it instead of from the host's, so the
  machine sees what is mounted there (a systemd-sysext image merged on /usr, say) under its own
  /run;
- its bus is the machine's own dbus-daemon, socket-activated by the manager's `dbus.socket` on
  `$XDG_RUNTIME_DIR/bus`. (A dbus-daemon started beforehand, as the recipe did, loses that path
  to `dbus.socket`, and `systemd --user` only joins the bus once its own dbus.socket and
  dbus.service run, so the first clients can end up on a bus where the manager never appears.)

Ready when the manager has sent READY=1 (sd_notify), `org.freedesktop.systemd1` owns its name on
the bus (NameOwnerChanged), and journald has sent READY=1.
Teardown is by PID, waiting on pidfds (PID 1 of these VMs does not reap, so `kill -0` lies).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import tempfile
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from fleetd.errors import PermanentError, TemporaryError
from fleetd.sandbox.notify import NotifySocket as _NotifySocket
from fleetd.sandbox.process import pid_alive
from fleetd.sandbox.sizes import apply as apply_limits
from fleetd.systemd.dbus import SYSTEMD, set_log_target, wait_for_name
from fleetd.systemd.manager import SystemdConfig

log = structlog.get_logger(__name__)

CGROUP_ROOTS = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))
JOURNALD = "/lib/systemd/systemd-journald"
_NAME = re.compile(r"[a-z0-9]{1,32}")
# $FLEETD_CGROUP_PROCS: the machine's cgroup.procs files, ":"-separated; a process that cannot
# join one of them does not run (it would escape the machine's limits, or its kill)
_JOIN_CGROUP = (
    'IFS=:; for f in $FLEETD_CGROUP_PROCS; do echo $$ > "$f" || exit 125; done; unset IFS'
)


def slice_name(name: str) -> str:
    """The name of the cgroups of the machine called `name`."""
    return f"fleetd{name}.slice"


class MachineError(TemporaryError):
    """The machine could not be started or stopped."""


class Machine:
    """A namespaced `systemd --user` machine. `async with Machine("m1") as m: ...`."""

    def __init__(
        self,
        name: str,
        machine_id: str | None = None,
        root: Path | None = None,
        start_timeout: float = 30.0,
        netns: str | None = None,
        limits: Mapping[str, Mapping[str, str]] | None = None,
        mount_namespace: str | None = None,
    ) -> None:
        if not _NAME.fullmatch(name):
            raise PermanentError(f"machine name must match {_NAME.pattern}: {name!r}")
        self.name = name
        self.machine_id = machine_id or secrets.token_hex(16)
        if not re.fullmatch(r"[0-9a-f]{32}", self.machine_id):
            raise PermanentError(f"machine id must be 32 lowercase hex digits: {self.machine_id!r}")
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix=f"fm-{name}-")) if root is None else root
        self.start_timeout = start_timeout
        self.netns = netns  # a network namespace of /run/netns, or None: the host's network
        self.mount_namespace = mount_namespace  # the one the machine's is made from; None: ours
        self.slice = slice_name(name)
        # cgroup directory → limit file → value (fleetd/sandbox/sizes.py: limit_cgroups)
        self.limits = {Path(d): dict(files) for d, files in (limits or {}).items()}
        self._systemd: asyncio.subprocess.Process | None = None
        self._journald: asyncio.subprocess.Process | None = None
        self._attached_pid: int | None = None  # systemd of a machine another process started

    # -- where things are

    @property
    def runtime_dir(self) -> Path:
        return self.root / "run"

    @property
    def bus_address(self) -> str:
        return f"unix:path={self.runtime_dir / 'bus'}"

    @property
    def units_dir(self) -> Path:
        """A units directory for this machine's adapter, on the shared (host) filesystem."""
        return self.root / "units"

    @property
    def cgroups(self) -> tuple[Path, ...]:
        """Every cgroup of the machine: its slices, then those holding its limits."""
        slices = tuple(root / self.slice for root in CGROUP_ROOTS)
        return slices + tuple(d for d in self.limits if d not in slices)

    @property
    def systemd_pid(self) -> int:
        if self._systemd is not None:
            return self._systemd.pid
        if self._attached_pid is not None:
            return self._attached_pid
        raise MachineError(f"machine {self.name} is not running")

    @property
    def running(self) -> bool:
        if self._systemd is not None:
            return self._systemd.returncode is None
        return self._attached_pid is not None and pid_alive(self._attached_pid)

    def attach(self, systemd_pid: int) -> Machine:
        """Manage a machine started by another process (its systemd --user is `systemd_pid`)."""
        self._attached_pid = systemd_pid
        return self

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment a process of this machine runs with."""
        env = dict(os.environ)
        env.update(
            XDG_RUNTIME_DIR=str(self.runtime_dir),
            DBUS_SESSION_BUS_ADDRESS=self.bus_address,
            FLEETD_CGROUP_PROCS=":".join(str(cg / "cgroup.procs") for cg in self.cgroups),
        )
        env.update(extra or {})
        return env

    def command(self, argv: Sequence[str], *, join_cgroup: bool = True) -> list[str]:
        """`argv` run inside this machine's mount (and network) namespace (use with `env()`)."""
        inner = ["sh", "-c", f'{_JOIN_CGROUP}; exec "$@"', "sh", *argv] if join_cgroup else [*argv]
        namespaces = ["-m", "-n"] if self.netns else ["-m"]
        return ["nsenter", "-t", str(self.systemd_pid), *namespaces, "--", *inner]

    async def exec(
        self,
        *argv: str,
        env: Mapping[str, str] | None = None,
        join_cgroup: bool = True,
        **kwargs: object,
    ) -> asyncio.subprocess.Process:
        """Start `argv` inside the machine (its mount namespace, environment and cgroup)."""
        return await asyncio.create_subprocess_exec(
            *self.command(argv, join_cgroup=join_cgroup),
            env=self.env(env),
            **kwargs,  # type: ignore[arg-type]
        )

    async def run(self, *argv: str, check: bool = True) -> str:
        """Run `argv` inside the machine to completion; its stdout."""
        proc = await self.exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        if check and proc.returncode != 0:
            raise MachineError(f"{argv!r} failed ({proc.returncode}): {err.decode().strip()}")
        return out.decode()

    def systemd_config(self, **overrides: Any) -> SystemdConfig:
        """How an adapter on the host reaches this machine's systemd, journal and systemctl."""
        settings: dict[str, Any] = dict(
            bus_address=self.bus_address,
            units_dir=self.units_dir,
            user=True,
            wrap=lambda argv: self.command(argv, join_cgroup=False),
            env=self.env(),
        )
        settings.update(overrides)
        return SystemdConfig(**settings)

    # -- life cycle

    async def __aenter__(self) -> Machine:
        try:
            await self.start()
        except BaseException:
            self.remove()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        self.remove()

    async def start(self) -> None:
        if self.running:
            return
        self._prepare()
        try:
            await self._start_systemd()
            await self._start_journald()
        except BaseException:
            await self.kill()
            raise
        log.info(
            "machine.started",
            machine=self.name,
            machine_id=self.machine_id,
            systemd_pid=self.systemd_pid,
            bus=self.bus_address,
        )

    def _prepare(self) -> None:
        for d in (self.runtime_dir, self.root / "journal", self.units_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.runtime_dir.chmod(0o700)
        (self.root / "machine-id").write_text(self.machine_id + "\n")
        for cg in self.cgroups:
            cg.mkdir(exist_ok=True)
            if _cgroup_pids(cg):
                raise MachineError(f"cgroup {cg} still has processes: is {self.name} running?")
        for cg, files in self.limits.items():
            try:
                apply_limits(cg, files)
            except OSError as err:
                raise MachineError(f"the limits of {self.name}: {err}") from None
        if self.limits:
            log.info(
                "machine.limited",
                machine=self.name,
                limits={str(cg): files for cg, files in self.limits.items()},
            )
        (self.runtime_dir / "bus").unlink(missing_ok=True)

    async def _start_systemd(self) -> None:
        script = (
            f"{_JOIN_CGROUP}; set -e; "
            "mount -t tmpfs -o mode=755 tmpfs /run; "
            "mkdir -p /run/systemd/system /run/fleet/units; "
            'ln -s "$XDG_RUNTIME_DIR/systemd/private" /run/systemd/private; '
            f"mount --bind {self.root / 'machine-id'} /etc/machine-id; "
            f"mount --bind {self.root / 'journal'} /var/log/journal; "
            "exec systemd --user"
        )
        namespaces = [f"--net=/run/netns/{self.netns}"] if self.netns else []
        if self.mount_namespace:
            namespaces.append(f"--mount={self.mount_namespace}")
        enter = ["nsenter", *namespaces, "--"] if namespaces else []
        with _NotifySocket(self.runtime_dir / "notify.systemd") as notify:
            self._systemd = await asyncio.create_subprocess_exec(
                *enter,
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                env=self.env({"NOTIFY_SOCKET": str(notify.path)}),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
            await self._until_ready("systemd --user", self._systemd, notify.ready())
        # Its dbus.socket now listens on $XDG_RUNTIME_DIR/bus; connecting activates the bus, and
        # the manager registers its name once dbus.service runs.
        await self._until_ready(
            "the systemd1 bus name",
            self._systemd,
            wait_for_name(self.bus_address, SYSTEMD, self.start_timeout),
        )

    async def _start_journald(self) -> None:
        with _NotifySocket(self.runtime_dir / "notify.journald") as notify:
            self._journald = await self.exec(
                JOURNALD,
                env={"NOTIFY_SOCKET": str(notify.path)},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
            await self._until_ready("journald", self._journald, notify.ready())
        # systemd --user chose its log target before journald existed (the console, which goes
        # nowhere): its own lines about units ("Main process exited, status=1/FAILURE", "Failed
        # to start ...") belong in the journal, where `fleetctl journal` shows them.
        await set_log_target(self.bus_address, "journal")

    async def _until_ready(
        self, what: str, proc: asyncio.subprocess.Process, ready: Coroutine[Any, Any, None]
    ) -> None:
        """Await `ready` with the start deadline; fail at once if `proc` dies meanwhile."""
        ready_task = asyncio.ensure_future(ready)
        died = asyncio.ensure_future(proc.wait())
        try:
            done, _ = await asyncio.wait(
                {ready_task, died},
                timeout=self.start_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for task in (ready_task, died):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
        if ready_task in done:
            ready_task.result()
            return
        if died in done:
            raise MachineError(f"{what} of {self.name} exited ({died.result()})")
        raise MachineError(f"{what} of {self.name} not ready within {self.start_timeout}s")

    async def stop(self) -> None:
        """Stop the machine: systemd --user first (it stops its units), then the rest."""
        if self._systemd is not None and self._systemd.returncode is None:
            self._systemd.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._systemd.wait(), self.start_timeout)
            except TimeoutError:
                log.warning("machine.stop_timeout", machine=self.name)
        for proc in (self._journald,):
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        await self.kill()
        log.info("machine.stopped", machine=self.name)

    async def kill(self) -> None:
        """SIGKILL every process in the machine's cgroups (a machine crash), wait until gone."""
        killed: set[int] = set()
        for _wave in range(5):  # a process forked during a wave is caught by the next one
            pids = set()
            for cg in self.cgroups:
                pids |= _cgroup_pids(cg)
            for proc in (self._systemd, self._journald):
                if proc is not None and proc.returncode is None:
                    pids.add(proc.pid)
            if not pids - killed:
                break
            await _kill_and_wait(pids)
            killed |= pids
        for proc in (self._systemd, self._journald):
            if proc is not None:
                await proc.wait()
        self._systemd = self._journald = None
        self._attached_pid = None
        for cg in self.cgroups:
            _remove_cgroup(cg)
        log.info("machine.killed", machine=self.name, pids=len(killed))

    def remove(self) -> None:
        """Delete the machine's root directory (if this object created it)."""
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)


def _cgroup_pids(cg: Path) -> set[int]:
    pids: set[int] = set()
    if not cg.is_dir():
        return pids
    for procs in cg.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids |= {int(p) for p in procs.read_text().split()}
    return pids


def _remove_cgroup(cg: Path) -> None:
    if not cg.is_dir():
        return
    for d in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            d.rmdir()
    try:
        cg.rmdir()
    except OSError as exc:
        log.warning("machine.cgroup_left", cgroup=str(cg), error=str(exc))


async def _kill_and_wait(pids: set[int], within: float = 10.0) -> None:
    """SIGKILL `pids` and wait (on pidfds) until each has exited."""
    loop = asyncio.get_running_loop()
    waits = []
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        done = loop.create_future()

        def exited(fd: int = fd, done: asyncio.Future[None] = done) -> None:
            loop.remove_reader(fd)
            os.close(fd)
            if not done.done():
                done.set_result(None)

        loop.add_reader(fd, exited)
        waits.append(done)
    if waits:
        try:
            await asyncio.wait_for(asyncio.gather(*waits), within)
        except TimeoutError as exc:
            raise MachineError("processes survived SIGKILL") from exc
