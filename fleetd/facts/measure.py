"""Measuring this machine: the few reads `fleetd.facts.parse` needs, and nothing else.

Run once by the daemon at start (`measure(units_dir)`); every read that fails is left out, and
the fact it feeds is then not published (`facts_of` says which).
"""

from __future__ import annotations

import os
from pathlib import Path

from fleetd.facts.parse import Readings, facts_of, limit_files

__all__ = ["OS_RELEASE", "measure", "read_machine"]

# os-release(5): /etc first, the vendor's copy under /usr/lib otherwise
OS_RELEASE = (Path("/etc/os-release"), Path("/usr/lib/os-release"))
_PROC = Path("/proc")


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged writer may still use on `path`'s filesystem (df's Avail), asked
    of its nearest existing directory (the units directory may not exist yet)."""
    for candidate in (path, *path.parents):
        try:
            st = os.statvfs(candidate)
        except FileNotFoundError:
            continue
        except OSError:
            return None
        return st.f_bavail * st.f_frsize
    return None


def read_machine(units_dir: Path, proc: Path = _PROC) -> Readings:
    """What `facts_of` needs, read from this machine (`proc`: where /proc is)."""
    files = limit_files(
        _read(proc / "self" / "cgroup") or "", _read(proc / "self" / "mountinfo") or ""
    )
    cgroup_files = {path: text for path in files if (text := _read(Path(path))) is not None}
    return Readings(
        cpus_allowed=len(os.sched_getaffinity(0)),
        cgroup_files=cgroup_files,
        meminfo=_read(proc / "meminfo"),
        os_release=next((t for p in OS_RELEASE if (t := _read(p)) is not None), None),
        kernel=os.uname().release,
        disk_free=_free_bytes(units_dir),
    )


def measure(units_dir: Path | str) -> dict[str, str]:
    """This machine's facts (`fleet.*` key → value), measured now."""
    return facts_of(read_machine(Path(units_dir)))
