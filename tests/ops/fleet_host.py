"""A sandbox machine set up as a host the fleetd package was installed on, for the tests of
contrib/systemd: the shipped unit files in its manager, the `fleet` group made by the shipped
sysusers.d file, the runtime directories by the shipped tmpfiles.d file.

The manager is the machine's `systemd --user` (fleetd/sandbox/machine.py), reached by fleetd with
`--dbus-address` and `--systemd-user=false`: in the machine's mount namespace
`/run/systemd/private` leads systemctl and journalctl to it, as on a host. The machine has its own
`/run`, so the shipped paths stay as they are: `/run/fleet.sock` (fleetctl's default endpoint,
`/var/run/fleet.sock`, run inside the machine), `/run/fleet`, `/run/fleet/units`.

What a test changes in the shipped files, and only that (`adjusted` refuses a key the file does
not hold exactly once, so a renamed option fails the tests):
- `ExecStart=`: this venv's fleetd with flags for the test's etcd, key prefix and the machine's
  bus (`fleetd_flags`);
- timings a test waits for (`WatchdogSec=`, `RestartSec=`), when it says so;
- a drop-in `LimitCORE=0`: the watchdog's SIGABRT would otherwise write a core file of fleetd
  into the manager's working directory (this host's core_pattern is a relative `core`).
The group is made in a copy of /etc/group bind-mounted over the machine's, so the host's own is
never touched.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from fleetd.sandbox.machine import Machine
from fleetd.systemd.dbus import UNIT_IFACE, SystemdBus, UnitChanged, unit_path

CONTRIB = Path(__file__).parents[2] / "contrib" / "systemd"
BIN = Path(sys.executable).parent
DEADLINE = 60.0  # a bound against hanging, never an expectation of speed

NO_CORE = "[Service]\nLimitCORE=0\n"


def adjusted(path: Path, replacements: Mapping[str, str]) -> str:
    """The unit file at `path` with the value of each `Key=` line in `replacements` replaced
    (each key must appear exactly once, so a renamed option in contrib/ fails the test)."""
    lines = path.read_text().splitlines()
    for key, value in replacements.items():
        hits = [i for i, line in enumerate(lines) if line.startswith(f"{key}=")]
        assert len(hits) == 1, f"{path.name}: expected one {key}= line, found {len(hits)}"
        lines[hits[0]] = f"{key}={value}"
    return "\n".join(lines) + "\n"


def options(path: Path) -> dict[str, list[str]]:
    """Every `Key=value` of a unit (or tmpfiles/sysusers) file, by key, in order."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def fleetd_flags(machine: Machine, etcd_endpoints: Sequence[str], key_prefix: str) -> list[str]:
    """What a host's fleet.conf would say, for the test's etcd and the machine's manager."""
    return [
        f"--etcd-servers={','.join(etcd_endpoints)}",
        f"--etcd-key-prefix={key_prefix}",
        "--public-ip=127.0.0.1",
        f"--dbus-address={machine.bus_address}",
        "--systemd-user=false",
        "--agent-ttl=10s",
    ]


class FleetHost:
    """`machine` with the shipped files installed (`install`), and what a test asks of it."""

    def __init__(self, machine: Machine, etcd_endpoints: Sequence[str], key_prefix: str) -> None:
        self.machine = machine
        self.flags = fleetd_flags(machine, etcd_endpoints, key_prefix)
        self.unit_dir = machine.runtime_dir / "systemd" / "user"  # the manager's runtime path
        self.fleet_gid: int | None = None

    async def install(
        self,
        *,
        socket: bool = True,
        service: Mapping[str, str] | None = None,
        flags: Sequence[str] = (),
    ) -> None:
        """The `fleet` group and runtime directories, then fleet.service (its ExecStart, and
        `service`'s other values) and, with `socket`, fleet.socket as shipped."""
        await self._make_group()
        await self.run("systemd-tmpfiles", "--create", str(CONTRIB / "tmpfiles.d" / "fleetd.conf"))
        self.unit_dir.mkdir(parents=True, exist_ok=True)
        exec_start = " ".join([str(BIN / "fleetd"), *self.flags, *flags])
        (self.unit_dir / "fleet.service").write_text(
            adjusted(CONTRIB / "fleet.service", {"ExecStart": exec_start, **(service or {})})
        )
        dropins = self.unit_dir / "fleet.service.d"
        dropins.mkdir(exist_ok=True)
        (dropins / "no-core.conf").write_text(NO_CORE)
        if socket:
            shutil.copy(CONTRIB / "fleet.socket", self.unit_dir / "fleet.socket")
        await self.run("systemctl", "--user", "daemon-reload")

    async def _make_group(self) -> None:
        """The shipped sysusers.d file run on a copy of the host's group files, the copy then
        bind-mounted over the machine's /etc/group (its mount namespace only)."""
        root = self.machine.root / "sysroot"
        (root / "etc").mkdir(parents=True, exist_ok=True)
        for name in ("group", "gshadow"):
            shutil.copy(Path("/etc") / name, root / "etc" / name)
        proc = await asyncio.create_subprocess_exec(
            "systemd-sysusers", f"--root={root}", str(CONTRIB / "sysusers.d" / "fleetd.conf"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out.decode()
        await self.run("mount", "--bind", str(root / "etc" / "group"), "/etc/group")
        self.fleet_gid = next(
            int(line.split(":")[2])
            for line in (root / "etc" / "group").read_text().splitlines()
            if line.startswith("fleet:")
        )

    # -- asking the machine

    async def run(self, *argv: str) -> str:
        return await self.machine.run(*argv)

    async def systemctl(self, *args: str) -> tuple[int, str]:
        """`systemctl --user ARGS` in the machine: its exit status and output."""
        proc = await self.machine.exec(
            "systemctl", "--user", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), DEADLINE)
        assert proc.returncode is not None
        return proc.returncode, out.decode().strip()

    async def start(self, unit: str) -> None:
        rc, out = await self.systemctl("start", unit)
        assert rc == 0, f"systemctl start {unit}: {out}\n{await self.journal()}"

    async def show(self, unit: str, *props: str) -> dict[str, str]:
        rc, out = await self.systemctl("show", unit, *(f"--property={p}" for p in props))
        assert rc == 0, out
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    async def main_pid(self, unit: str) -> int:
        return int((await self.show(unit, "MainPID"))["MainPID"])

    async def fleetctl(self, *args: str, user: Sequence[str] = ()) -> tuple[int, str, str]:
        """The real fleetctl, run inside the machine with its default endpoint
        (unix:///var/run/fleet.sock); `user` is a setpriv prefix to run it as someone else."""
        proc = await self.machine.exec(
            *user, str(BIN / "fleetctl"), "--request-timeout=50", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def run_as(self, user: Sequence[str], *argv: str) -> tuple[int, str, str]:
        """`argv` inside the machine as someone else (`user`: a setpriv prefix)."""
        proc = await self.machine.exec(
            *user, *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def fleetctl_ok(self, *args: str) -> str:
        rc, out, err = await self.fleetctl(*args)
        assert rc == 0, f"fleetctl {' '.join(args)}: {err}\n{await self.journal()}"
        return out

    async def journal(self, lines: int = 80) -> str:
        """The machine's journal (fleetd's lines and the manager's), for an assertion's message."""
        proc = await self.machine.exec(
            "journalctl", "--no-pager", "-n", str(lines),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        return out.decode()

    def path(self, inside: str) -> Path:
        """A path of the machine's mount namespace (its private /run), as seen from the host."""
        return Path(f"/proc/{self.machine.systemd_pid}/root") / inside.lstrip("/")

    def watch(self, unit: str) -> UnitWatch:
        return UnitWatch(self.machine.bus_address, unit)


class UnitWatch:
    """The (ActiveState, SubState) pairs a unit goes through, pushed by the manager on D-Bus
    (Subscribe + PropertiesChanged): the first is its state when the watch was entered."""

    def __init__(self, address: str, unit: str) -> None:
        self.address = address
        self.unit = unit
        self.seen: list[tuple[str, str]] = []
        self._changed = asyncio.Event()
        self._bus: SystemdBus | None = None

    async def __aenter__(self) -> UnitWatch:
        self._bus = await SystemdBus.connect(self.address)
        self._bus.on_signal(self._on_signal)
        await self._bus.add_match(
            "type='signal',interface='org.freedesktop.DBus.Properties',"
            f"member='PropertiesChanged',path='{unit_path(self.unit)}'"
        )
        await self._bus.call("Subscribe")
        props = await self._bus.get_all(self.unit, UNIT_IFACE)
        if not self.seen:  # no signal came first
            self.seen.append((props["ActiveState"], props["SubState"]))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._bus is not None:
            self._bus.disconnect()

    def _on_signal(self, event: object) -> None:
        if not isinstance(event, UnitChanged) or event.unit != self.unit:
            return
        last = self.seen[-1] if self.seen else ("", "")
        state = (event.changed.get("ActiveState", last[0]), event.changed.get("SubState", last[1]))
        if state != last:
            self.seen.append(state)
            self._changed.set()

    async def until(
        self, predicate: Callable[[list[tuple[str, str]]], bool], within: float = DEADLINE
    ) -> list[tuple[str, str]]:
        """The states seen so far, once `predicate` holds for them (deadline: `within`)."""

        async def holds() -> None:
            while not predicate(self.seen):
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(holds(), within)
        except TimeoutError:
            raise AssertionError(f"{self.unit}: states {self.seen} within {within}s") from None
        return list(self.seen)


def in_order(*states: tuple[str, str | None]) -> Callable[[list[tuple[str, str]]], bool]:
    """A predicate of `UnitWatch.until`: the unit went through these (ActiveState, SubState)
    pairs in this order, others in between (a None sub-state matches any)."""

    def holds(seen: list[tuple[str, str]]) -> bool:
        at = 0
        for active, sub in seen:
            want_active, want_sub = states[at]
            if active == want_active and want_sub in (None, sub):
                at += 1
                if at == len(states):
                    return True
        return False

    return holds


def cgroup_of(pid: int) -> str:
    """The unified-hierarchy cgroup of a process."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    raise AssertionError(f"process {pid} has no unified cgroup line")


def move_to_cgroup(pid: int, cgroup: str) -> None:
    """Put a process into a cgroup of the unified and the `name=systemd` hierarchies (this host's
    hybrid layout: systemd tracks a unit's processes there)."""
    for hierarchy in ("unified", "systemd"):
        Path(f"/sys/fs/cgroup/{hierarchy}{cgroup}/cgroup.procs").write_text(str(pid))
