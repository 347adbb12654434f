"""Measuring this machine for real (`fleetd/facts/measure.py`): the facts checked against other
sources (sysconf, statvfs, uname, Python's own os-release reader), then measured by a process
in real cgroups with a CPU quota and a memory limit."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetd.facts import measure
from tests.facts.cgroups import join_argv, v1_dir

REPO = Path(__file__).parents[2]


def test_the_facts_of_this_machine_are_sane(tmp_path: Path) -> None:
    units = tmp_path / "run" / "fleet" / "units"  # not made yet: its nearest parent is asked
    facts = measure(units)
    assert set(facts) == {
        "fleet.cpus", "fleet.memory", "fleet.disk", "fleet.kernel", "fleet.os", "fleet.os-version"
    }  # fmt: skip
    assert 0 < float(facts["fleet.cpus"]) <= len(os.sched_getaffinity(0))
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")  # = MemTotal
    assert 0 < int(facts["fleet.memory"]) <= physical
    st = os.statvfs(tmp_path)
    assert 0 < int(facts["fleet.disk"]) <= st.f_blocks * st.f_frsize
    assert facts["fleet.kernel"] == platform.release()
    release = platform.freedesktop_os_release()
    assert facts["fleet.os"] == release["ID"]
    assert facts["fleet.os-version"] == release["VERSION_ID"]


@pytest.fixture
def limited() -> Iterator[tuple[Path, Path]]:
    """A cgroup with a quota of 1.5 CPUs (v1 cpu) and one with a limit of 512 MiB (v1 memory),
    each with a child holding no limit of its own: (cpu child, memory child). Removed after."""
    cpu, memory = v1_dir("cpu"), v1_dir("memory")
    if cpu is None or memory is None:
        pytest.skip("needs writable cgroup v1 cpu and memory hierarchies (this machine's layout)")
    name = f"fleetd-facts-test-{os.getpid()}"
    made = [cpu / name, cpu / name / "inner", memory / name, memory / name / "inner"]
    try:
        for d in made:
            d.mkdir()
        (cpu / name / "cpu.cfs_period_us").write_text("100000")
        (cpu / name / "cpu.cfs_quota_us").write_text("150000")
        (memory / name / "memory.limit_in_bytes").write_text(str(512 << 20))
        yield cpu / name / "inner", memory / name / "inner"
    finally:
        for d in reversed(made):
            if d.exists():
                d.rmdir()


@pytest.mark.root("cgroups")
def test_the_facts_follow_the_cgroups_limits(limited: tuple[Path, Path], tmp_path: Path) -> None:
    """The limits are on the parents of the process's cgroups: they bind it all the same."""
    cpu, memory = limited
    script = (
        "import json, sys\nfrom fleetd.facts import measure\n"
        "print(json.dumps(measure(sys.argv[1])))"
    )
    done = subprocess.run(
        join_argv([cpu, memory], [sys.executable, "-c", script, str(tmp_path)]),
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["fleet.cpus"] == ("1.5" if len(os.sched_getaffinity(0)) >= 2 else "1")
    assert facts["fleet.memory"] == str(512 << 20)
