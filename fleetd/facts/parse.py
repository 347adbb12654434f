"""What a machine's files say about it: the facts fleetd publishes as `fleet.*` metadata.

Pure: file contents in, facts out (`fleetd/facts/measure.py` reads the files). Two steps,
because which cgroup files hold the limits depends on two other files:

1. `limit_files(self_cgroup, mountinfo)` — from `/proc/self/cgroup` and `/proc/self/mountinfo`,
   the files that may limit this process's CPU and memory: cgroup v2 `cpu.max` and
   `memory.max`, cgroup v1 `cpu.cfs_quota_us` (with `cpu.cfs_period_us`) and
   `memory.limit_in_bytes`, in the process's own cgroup and in each of its ancestors up to the
   hierarchy's mount (a parent's limit binds its children too);
2. `facts_of(Readings)` — the facts from what was read: CPUs, memory, free disk, kernel, OS.

A value that could not be measured is left out (never guessed), so a `MachineMetadata=` clause
on it does not match that machine.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from fleetd.rules.metadata import RESERVED_PREFIX
from fleetd.rules.resources import CPUS, MEMORY

__all__ = [
    "CPUS",
    "DISK",
    "KERNEL",
    "KEYS",
    "MEMORY",
    "OS",
    "OS_VERSION",
    "CgroupMount",
    "Readings",
    "cgroup_mounts",
    "cpu_limit",
    "facts_of",
    "limit_files",
    "mem_total",
    "memory_limit",
    "os_release",
    "own_cgroups",
]

# The facts' keys, in the order they are listed
# CPUS: CPUs this process may use, a number (fractional with a quota); MEMORY: bytes of memory
# it may use, an integer. Named where the reservations read them (fleetd.rules.resources).
DISK = f"{RESERVED_PREFIX}disk"  # free bytes of the units directory's filesystem at start
KERNEL = f"{RESERVED_PREFIX}kernel"  # the kernel release (`uname -r`)
OS = f"{RESERVED_PREFIX}os"  # the OS's ID in os-release (debian, ubuntu, fedora, ...)
OS_VERSION = f"{RESERVED_PREFIX}os-version"  # its VERSION_ID (12, 22.04, ...)
KEYS = (CPUS, MEMORY, DISK, KERNEL, OS, OS_VERSION)

CPU_MAX, CPU_QUOTA, CPU_PERIOD = "cpu.max", "cpu.cfs_quota_us", "cpu.cfs_period_us"
MEMORY_MAX, MEMORY_LIMIT = "memory.max", "memory.limit_in_bytes"
_DEFAULT_PERIOD = 100_000  # µs: the kernel's CFS period when none is given
# cgroup v1 writes "no limit" as the largest page count times the page size (9223372036854771712
# with 4 KiB pages): a limit of 1 EiB or more is no limit.
_NO_LIMIT = 1 << 60
# what a fact's text may hold: no separator of metadata (`,` `|` `=`), no space
_VALUE = re.compile(r"[A-Za-z0-9._+~:-]+")


@dataclass(frozen=True, slots=True)
class CgroupMount:
    """One cgroup hierarchy mounted in this mount namespace."""

    version: int  # 1 or 2
    root: str  # the hierarchy's directory mounted there (mountinfo's 4th field)
    mount_point: str
    controllers: frozenset[str] = field(default_factory=frozenset)  # v1: its super options


def _unescape(text: str) -> str:
    """mountinfo's octal escapes (`\\040` is a space)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def cgroup_mounts(mountinfo: str) -> list[CgroupMount]:
    """The cgroup (v1) and cgroup2 mounts of `/proc/self/mountinfo`, in its order."""
    mounts = []
    for line in mountinfo.splitlines():
        before, sep, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if not sep or len(fields) < 5 or len(tail) < 1:
            continue
        root, point = _unescape(fields[3]), _unescape(fields[4])
        if tail[0] == "cgroup2":
            mounts.append(CgroupMount(2, root, point))
        elif tail[0] == "cgroup" and len(tail) >= 3:
            mounts.append(CgroupMount(1, root, point, frozenset(tail[2].split(","))))
    return mounts


def own_cgroups(self_cgroup: str) -> dict[str, str]:
    """`/proc/self/cgroup`: the process's cgroup path per v1 controller (`cpu`, `memory`,
    `name=systemd`, ...), and its v2 path under "" (the `0::/path` line)."""
    paths: dict[str, str] = {}
    for line in self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for controller in controllers.split(",") if controllers else ("",):
            paths.setdefault(controller, path)
    return paths


def _dirs(mount: CgroupMount, path: str) -> list[str]:
    """The directories of cgroup `path` and its ancestors under `mount`, own one first."""
    root = mount.root.rstrip("/")
    if path == root or path.startswith(f"{root}/"):
        relative = path[len(root) :].strip("/")
    else:  # outside what is mounted here (another cgroup namespace): only the mount's own
        relative = ""
    parts = relative.split("/") if relative else []
    if ".." in parts:  # above its cgroup namespace's root (`0::/../x`): not below this mount
        parts = []
    base = PurePosixPath(mount.mount_point)
    return [str(base.joinpath(*parts[:n])) for n in range(len(parts), -1, -1)]


def limit_files(self_cgroup: str, mountinfo: str) -> list[str]:
    """Every file that may limit this process's CPU or memory (see the module's docstring).
    A file of a controller the hierarchy does not run is absent: read it as no limit."""
    own, mounts = own_cgroups(self_cgroup), cgroup_mounts(mountinfo)
    files: list[str] = []
    v2 = next((m for m in mounts if m.version == 2), None)
    if v2 is not None and "" in own:
        for d in _dirs(v2, own[""]):
            files += [f"{d}/{CPU_MAX}", f"{d}/{MEMORY_MAX}"]
    for controller, names in (("cpu", (CPU_QUOTA, CPU_PERIOD)), ("memory", (MEMORY_LIMIT,))):
        mount = next((m for m in mounts if m.version == 1 and controller in m.controllers), None)
        if mount is not None and controller in own:
            files += [f"{d}/{name}" for d in _dirs(mount, own[controller]) for name in names]
    return files


def _integer(text: str | None) -> int | None:
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def cpu_limit(files: Mapping[str, str]) -> tuple[int, int] | None:
    """The tightest CPU quota among `files` (path → content) as (quota, period) in µs, None
    when there is none: v2 `cpu.max` "QUOTA PERIOD" ("max ..." is none), v1
    `cpu.cfs_quota_us` (-1 is none) over `cpu.cfs_period_us` of the same directory."""
    limits: list[tuple[int, int]] = []
    for path, text in files.items():
        directory, name = path.rpartition("/")[::2]
        if name == CPU_MAX:
            words = text.split()
            quota = _integer(words[0]) if words and words[0] != "max" else None
            period = _integer(words[1]) if len(words) > 1 else _DEFAULT_PERIOD
        elif name == CPU_QUOTA:
            quota = _integer(text)
            period = _integer(files.get(f"{directory}/{CPU_PERIOD}")) or _DEFAULT_PERIOD
        else:
            continue
        if quota is not None and quota > 0 and period is not None and period > 0:
            limits.append((quota, period))
    return min(limits, key=lambda qp: qp[0] / qp[1], default=None)


def memory_limit(files: Mapping[str, str]) -> int | None:
    """The lowest memory limit among `files` in bytes (v2 `memory.max`, v1
    `memory.limit_in_bytes`), None when there is none ("max", or 1 EiB and more)."""
    limits = [
        n
        for path, text in files.items()
        if path.rpartition("/")[2] in (MEMORY_MAX, MEMORY_LIMIT)
        and (n := _integer(text)) is not None
        and 0 < n < _NO_LIMIT
    ]
    return min(limits, default=None)


def mem_total(meminfo: str) -> int | None:
    """`MemTotal` of `/proc/meminfo`, in bytes."""
    for line in meminfo.splitlines():
        name, _, rest = line.partition(":")
        if name == "MemTotal":
            words = rest.split()
            n = _integer(words[0]) if words else None
            unit = words[1].lower() if len(words) > 1 else ""
            return None if n is None else n * (1024 if unit == "kb" else 1)
    return None


def os_release(text: str) -> dict[str, str]:
    """The variables of an os-release file (shell-like `KEY=value`, quotes removed)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        try:
            words = shlex.split(value)
        except ValueError:  # an unbalanced quote: the text as it is
            words = [value.strip("\"'")]
        out[key.strip()] = " ".join(words)
    return out


@dataclass(frozen=True, slots=True)
class Readings:
    """What the shell read of the machine; None (or absent) where it could not read."""

    cpus_allowed: int  # CPUs in the process's affinity mask
    cgroup_files: Mapping[str, str] = field(default_factory=dict)  # the limit files read
    meminfo: str | None = None
    os_release: str | None = None
    kernel: str = ""
    disk_free: int | None = None  # bytes


def _cpus(allowed: int, limit: tuple[int, int] | None) -> str:
    """CPUs as text, at most 2 decimals (rounded down, never below 0.01): `2`, `1.5`."""
    hundredths = allowed * 100
    if limit is not None:
        hundredths = min(hundredths, limit[0] * 100 // limit[1])
    hundredths = max(hundredths, 1)
    whole, part = divmod(hundredths, 100)
    return f"{whole}.{part:02d}".rstrip("0").rstrip(".")


def facts_of(readings: Readings) -> dict[str, str]:
    """The facts, by key (in `KEYS` order); a fact that was not measured is absent."""
    facts: dict[str, str] = {}
    if readings.cpus_allowed > 0:
        facts[CPUS] = _cpus(readings.cpus_allowed, cpu_limit(readings.cgroup_files))
    sizes = [
        n
        for n in (mem_total(readings.meminfo or ""), memory_limit(readings.cgroup_files))
        if n is not None
    ]
    if sizes:
        facts[MEMORY] = str(min(sizes))
    if readings.disk_free is not None:
        facts[DISK] = str(readings.disk_free)
    facts[KERNEL] = readings.kernel
    release = os_release(readings.os_release or "")
    facts[OS] = release.get("ID", "")
    facts[OS_VERSION] = release.get("VERSION_ID", "")
    return {k: v for k, v in facts.items() if _VALUE.fullmatch(v)}
