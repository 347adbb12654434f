"""Machine sizes: the memory and CPUs each sandbox machine may use, set as limits of cgroups its
every process joins, so that its fleetd *measures* them (`fleet.memory`, `fleet.cpus`; see
fleetd/facts/) exactly as it would on a real host of that size. No metadata is faked.

`fleetd sandbox up --memory 1G,2G,4G --cpus 0.5,1,2` gives machine mN the Nth value of each
list; machines past a list's end have no such limit. Where the limit goes depends on which
cgroup hierarchy runs the controller on this host:
- cgroup v1 (the `memory` and `cpu` hierarchies of systemd's hybrid layout):
  `memory.limit_in_bytes`, and `cpu.cfs_quota_us` over `cpu.cfs_period_us`, of a child named
  after the machine's slice of the cgroup the `up` command runs in (so the machines stay inside
  whatever limits and accounts their caller);
- cgroup v2: `memory.max` and `cpu.max` of the machine's own cgroup at the hierarchy's top (where
  its unified cgroup is: the "no internal processes" rule forbids enabling a controller below a
  cgroup that holds processes, such as the caller's), the controller enabled in its parent's
  `cgroup.subtree_control`.
A size whose controller neither offers is refused, naming it: never a machine silently left
unlimited. `up` chooses the directories and files once and records them per machine in
sandbox.json (`MachineRecord.limits`), so `start` sets the same limits again, `restart` (fleetd
only) joins the same cgroups, and `kill` and `down` remove them with the machine's others.

Also per machine, fleet.conf's `reserved_memory` and `reserved_cpu` (`--reserved-memory`,
`--reserved-cpu`), handed to its fleetd as flags: it publishes them as `fleet.memory-reserved`
and `fleet.cpus-reserved`.

Pure but for `host_cgroups`, `host_capacity` and `apply`, the reads and writes of /proc and
/sys/fs/cgroup.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from fleetd.config import OPTIONS
from fleetd.facts.parse import CgroupMount, cgroup_mounts, own_cgroups
from fleetd.rules.resources import CPUS, MEMORY, show_size
from fleetd.rules.sizes import cpus as parse_cpus
from fleetd.rules.sizes import size as parse_size
from fleetd.sandbox.state import SandboxError

__all__ = [
    "CPU_PERIOD",
    "MIN_CPUS",
    "MIN_MEMORY",
    "HostCgroups",
    "Size",
    "apply",
    "check_host",
    "host_capacity",
    "host_cgroups",
    "limit_cgroups",
    "sizes_of",
]

T = TypeVar("T")

MIN_MEMORY = 256 << 20  # its systemd, dbus, journald and fleetd take about 100M
MIN_CPUS = 0.1  # below, a machine's fleetd takes tens of seconds to start
CPU_PERIOD = 100_000  # µs, the kernel's default CFS period
PAGE = os.sysconf("SC_PAGE_SIZE")  # a memory limit is a whole number of pages
_HUNDREDTHS = re.compile(r"[0-9]*(\.[0-9]{0,2})?")
_V2_CONTROLLER = {"memory.max": "memory", "cpu.max": "cpu"}  # the v2 files a size writes


@dataclass(frozen=True, slots=True)
class Size:
    """What one machine is given: limits (0: none) and what its fleetd holds back for the host."""

    memory: int = 0  # bytes
    cpus: float = 0.0
    reserved_memory: int = 0  # bytes
    reserved_cpu: float = 0.0

    @property
    def limited(self) -> bool:
        return bool(self.memory or self.cpus)

    def fleetd_flags(self) -> list[str]:
        """The fleet.conf options of `fleetd` this size sets (none for the defaults)."""
        flags = []
        if self.reserved_memory:
            flags.append(f"--reserved-memory={self.reserved_memory}")
        if self.reserved_cpu:
            flags.append(f"--reserved-cpu={self.reserved_cpu:g}")
        return flags

    def words(self) -> str:
        """`memory=1G,cpus=0.5,reserved-memory=256M` (only what is set), for `status`."""
        parts = []
        if self.memory:
            parts.append(f"memory={show_size(self.memory)}")
        if self.cpus:
            parts.append(f"cpus={self.cpus:g}")
        if self.reserved_memory:
            parts.append(f"reserved-memory={show_size(self.reserved_memory)}")
        if self.reserved_cpu:
            parts.append(f"reserved-cpu={self.reserved_cpu:g}")
        return ",".join(parts)


# ---- the flags --------------------------------------------------------------------------------


def _memory(text: str) -> int:
    found = parse_size(text)
    if found is None or found == 0:
        raise ValueError("not a size (bytes, or with K, M, G, T: 512M)")
    if found < MIN_MEMORY:
        raise ValueError(
            f"a machine needs at least {show_size(MIN_MEMORY)} (its systemd, journald and "
            "fleetd run in it)"
        )
    if found % PAGE:
        raise ValueError(f"not a whole number of pages ({PAGE} bytes): the kernel would round it")
    return found


def _cpus(text: str) -> float:
    found = parse_cpus(text)
    if found is None or found == 0:
        raise ValueError("not a number of CPUs (0.5, 2)")
    if not _HUNDREDTHS.fullmatch(text):
        raise ValueError("at most two decimals (fleet.cpus is measured in hundredths)")
    if found < MIN_CPUS:
        raise ValueError(f"a machine needs at least {MIN_CPUS:g} CPU")
    return found


def _option(name: str) -> Callable[[str], Any]:
    """The parser of fleet.conf's option `name`, with its own error messages."""
    return next(option.parse for option in OPTIONS if option.name == name)


def _values(flag: str, texts: Sequence[str], machines: int, parse: Callable[[str], T]) -> list[T]:
    """A per-machine flag's values in order: each occurrence holds one or several, comma
    separated (`--memory 1G,2G` is `--memory 1G --memory 2G`)."""
    items = [item.strip() for text in texts for item in text.split(",")]
    if len(items) > machines:
        raise SandboxError(
            f"{flag} {','.join(items)}: {_count(len(items), 'value')} for "
            f"{_count(machines, 'machine')}"
        )
    values = []
    for i, item in enumerate(items):
        try:
            values.append(parse(item))
        except ValueError as err:
            raise SandboxError(f"{flag} {item or repr(item)} (m{i + 1}): {err}") from None
    return values


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def sizes_of(
    machines: int,
    memory: Sequence[str] = (),
    cpus: Sequence[str] = (),
    reserved_memory: Sequence[str] = (),
    reserved_cpu: Sequence[str] = (),
) -> list[Size]:
    """Each machine's size from the flags' texts; SandboxError naming the flag, the value and
    the machine for a value refused."""
    columns = (
        _values("--memory", memory, machines, _memory),
        _values("--cpus", cpus, machines, _cpus),
        _values("--reserved-memory", reserved_memory, machines, _option("reserved_memory")),
        _values("--reserved-cpu", reserved_cpu, machines, _option("reserved_cpu")),
    )
    defaults = (0, 0.0, 0, 0.0)
    return [
        Size(
            *(
                col[i] if i < len(col) else default
                for col, default in zip(columns, defaults, strict=True)
            )
        )
        for i in range(machines)
    ]


# ---- where the limits go --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostCgroups:
    """What decides where a limit goes: the cgroup mounts (`/proc/self/mountinfo`), the caller's
    cgroups (`/proc/self/cgroup`) and the controllers the v2 hierarchy offers at its top."""

    mounts: tuple[CgroupMount, ...]
    own: Mapping[str, str]
    v2_controllers: frozenset[str]

    def describe(self) -> str:
        v1 = sorted(c for m in self.mounts if m.version == 1 for c in m.controllers)
        v2 = sorted(self.v2_controllers)
        return (
            f"cgroup v1 controllers: {', '.join(v1) or 'none'}; "
            f"cgroup v2 controllers: {', '.join(v2) or 'none'}"
        )


def _v1_dir(mount: CgroupMount, own_path: str | None, name: str) -> str:
    """`name` below the caller's cgroup in the v1 hierarchy `mount` (below the mount itself
    when the caller's cgroup is not under it)."""
    root = mount.root.rstrip("/")
    path = own_path or "/"
    relative = path[len(root) :] if path == root or path.startswith(f"{root}/") else ""
    parts = [p for p in relative.split("/") if p]
    if ".." in parts:
        parts = []
    return str(PurePosixPath(mount.mount_point, *parts, name))


def limit_cgroups(name: str, size: Size, host: HostCgroups) -> dict[str, dict[str, str]]:
    """The cgroups that give a machine its `size` (directory → file → value, in the order to
    write), for a machine whose cgroups are called `name`; SandboxError when no hierarchy
    runs a controller the size needs."""
    wanted: list[tuple[str, str, dict[str, str], dict[str, str]]] = []
    if size.memory:
        wanted.append((
            "--memory", "memory",
            {"memory.limit_in_bytes": str(size.memory)},
            {"memory.max": str(size.memory)},
        ))  # fmt: skip
    if size.cpus:
        quota = round(size.cpus * CPU_PERIOD)
        wanted.append((
            "--cpus", "cpu",
            {"cpu.cfs_period_us": str(CPU_PERIOD), "cpu.cfs_quota_us": str(quota)},
            {"cpu.max": f"{quota} {CPU_PERIOD}"},
        ))  # fmt: skip
    limits: dict[str, dict[str, str]] = {}
    for flag, controller, v1_files, v2_files in wanted:
        v1 = next((m for m in host.mounts if m.version == 1 and controller in m.controllers), None)
        v2 = next((m for m in host.mounts if m.version == 2), None)
        if v1 is not None:
            directory, files = _v1_dir(v1, host.own.get(controller), name), v1_files
        elif v2 is not None and controller in host.v2_controllers:
            directory, files = str(PurePosixPath(v2.mount_point, name)), v2_files
        else:
            raise SandboxError(
                f"{flag} needs the cgroup {controller} controller, which this host does not "
                f"offer ({host.describe()})"
            )
        limits.setdefault(directory, {}).update(files)
    return limits


def check_host(sizes: Sequence[Size], memory: int | None, cpus: float | None) -> None:
    """Refuse a size larger than this host (`memory`, `cpus`: what a fleetd here measures):
    the machine would measure the host's, not the size asked for."""
    for i, size in enumerate(sizes):
        if memory is not None and size.memory > memory:
            raise SandboxError(
                f"--memory {show_size(size.memory)} (m{i + 1}): more than this host's "
                f"{show_size(memory)} ({MEMORY}); a machine cannot measure more"
            )
        if cpus is not None and size.cpus > cpus:
            raise SandboxError(
                f"--cpus {size.cpus:g} (m{i + 1}): more than this host's {cpus:g} CPUs "
                f"({CPUS}); a machine cannot measure more"
            )


# ---- the host -------------------------------------------------------------------------------


def host_cgroups() -> HostCgroups:
    """This process's cgroup mounts, cgroups, and the v2 hierarchy's controllers."""
    mounts = tuple(cgroup_mounts(Path("/proc/self/mountinfo").read_text()))
    v2 = next((m for m in mounts if m.version == 2), None)
    controllers: frozenset[str] = frozenset()
    if v2 is not None:
        try:
            controllers = frozenset(Path(v2.mount_point, "cgroup.controllers").read_text().split())
        except OSError:
            pass
    return HostCgroups(mounts, own_cgroups(Path("/proc/self/cgroup").read_text()), controllers)


def host_capacity(directory: Path) -> tuple[int | None, float | None]:
    """What a fleetd started here would measure: (memory bytes, CPUs)."""
    from fleetd.facts.measure import measure

    facts = measure(directory)
    memory = parse_size(facts.get(MEMORY, ""))
    count = parse_cpus(facts.get(CPUS, ""))
    return memory, count


def apply(directory: Path, files: Mapping[str, str]) -> None:
    """Make the cgroup `directory` and write its limit `files`; a v2 controller is first
    enabled in the parent's `cgroup.subtree_control`. OSError with the file and value."""
    for controller in sorted({_V2_CONTROLLER[f] for f in files if f in _V2_CONTROLLER}):
        control = directory.parent / "cgroup.subtree_control"
        if controller not in control.read_text().split():
            _write(control, f"+{controller}")
    directory.mkdir(exist_ok=True)
    for name, value in files.items():
        _write(directory / name, value)


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as err:
        raise OSError(f"cannot write {value} to {path}: {err.strerror or err}") from None
