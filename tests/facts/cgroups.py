"""Real cgroups for the facts' tests: a child of this process's cgroup in a v1 hierarchy (this
repo's test machines run systemd's hybrid layout: the controllers on v1)."""

from __future__ import annotations

import os
from pathlib import Path

from fleetd.facts.parse import cgroup_mounts, own_cgroups


def v1_dir(controller: str) -> Path | None:
    """This process's cgroup directory in the v1 hierarchy of `controller`; None when there is
    none, or it cannot be written (not root)."""
    own = own_cgroups(Path("/proc/self/cgroup").read_text())
    for mount in cgroup_mounts(Path("/proc/self/mountinfo").read_text()):
        if mount.version == 1 and controller in mount.controllers and controller in own:
            directory = Path(mount.mount_point, own[controller].removeprefix(mount.root).strip("/"))
            return directory if os.access(directory, os.W_OK) else None
    return None


def join_argv(cgroups: list[Path], argv: list[str]) -> list[str]:
    """`argv` run in each of `cgroups` (a shell joins them, then execs it: same PID)."""
    joins = " && ".join(f'echo $$ > "${i + 1}/cgroup.procs"' for i in range(len(cgroups)))
    return ["sh", "-c", f'{joins} && shift {len(cgroups)} && exec "$@"', "sh",
            *map(str, cgroups), *argv]  # fmt: skip


def empty_and_remove(cgroup: Path) -> None:
    """Move what still runs in `cgroup` to its parent, then remove it."""
    procs = cgroup / "cgroup.procs"
    for pid in procs.read_text().split() if procs.exists() else ():
        try:
            (cgroup.parent / "cgroup.procs").write_text(pid)
        except ProcessLookupError:  # exited meanwhile
            pass
    if cgroup.exists():
        cgroup.rmdir()
