"""Machine facts from file contents (`fleetd/facts/parse.py`, pure): which cgroup files limit a
process (cgroup v1, v2 and both at once, in and out of containers), the limits they hold,
/proc/meminfo, os-release, and the facts fleetd publishes from them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fleetd.facts.parse import (
    Readings,
    cpu_limit,
    facts_of,
    limit_files,
    mem_total,
    memory_limit,
    os_release,
    own_cgroups,
)

# /proc/self/mountinfo of the layouts below (only the cgroup lines matter; one other line each)
PROC = "22 28 0:20 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n"
MOUNTS_V2 = PROC + (
    "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n"
)
# systemd's hybrid layout (this repo's test machines): the controllers on v1, an empty v2 beside
MOUNTS_HYBRID = PROC + (
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
)
# a container without a cgroup namespace: its own cgroups bind-mounted where the host's were
MOUNTS_BIND = PROC + (
    "612 600 0:29 /docker/c0ffee /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup "
    "rw,cpu,cpuacct\n"
    "613 600 0:32 /docker/c0ffee /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n"
)

SELF_V2 = "0::/system.slice/fleet.service\n"
# a sandbox machine's fleetd (fleetd/sandbox/machine.py): its own slice in name=systemd and the
# unified hierarchy, the other controllers where `fleetd sandbox up` ran
SELF_SANDBOX = (
    "9:name=systemd:/fleetdm1.slice\n8:pids:/\n4:memory:/process_api/5a90\n"
    "2:cpu,cpuacct:/\n0::/fleetdm1.slice\n"
)
SELF_DOCKER = "4:memory:/docker/c0ffee\n2:cpu,cpuacct:/docker/c0ffee\n0::/\n"


@pytest.mark.parametrize(
    ("self_cgroup", "paths"),
    [
        # v2 only: one line, no controllers named
        (SELF_V2, {"": "/system.slice/fleet.service"}),
        # v1 and v2 together; co-mounted controllers share a path
        (SELF_SANDBOX, {"name=systemd": "/fleetdm1.slice", "pids": "/", "memory": "/process_api/5a90",
                        "cpu": "/", "cpuacct": "/", "": "/fleetdm1.slice"}),
        # a path with ':' in it, a line that is not one
        ("0::/a:b\ngarbage\n", {"": "/a:b"}),
        ("", {}),
    ],
    ids=["v2", "hybrid", "colon-in-path", "empty"],
)  # fmt: skip
def test_own_cgroups(self_cgroup: str, paths: dict[str, str]) -> None:
    assert own_cgroups(self_cgroup) == paths


@pytest.mark.parametrize(
    ("self_cgroup", "mountinfo", "files"),
    [
        # v2: the process's cgroup and each ancestor up to the mount
        (SELF_V2, MOUNTS_V2, [
            "/sys/fs/cgroup/system.slice/fleet.service/cpu.max",
            "/sys/fs/cgroup/system.slice/fleet.service/memory.max",
            "/sys/fs/cgroup/system.slice/cpu.max", "/sys/fs/cgroup/system.slice/memory.max",
            "/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/memory.max"]),
        # hybrid (a sandbox machine): v2 files of its slice (absent there: no controllers), v1
        # files of the cpu and memory hierarchies where it is in them
        (SELF_SANDBOX, MOUNTS_HYBRID, [
            "/sys/fs/cgroup/unified/fleetdm1.slice/cpu.max",
            "/sys/fs/cgroup/unified/fleetdm1.slice/memory.max",
            "/sys/fs/cgroup/unified/cpu.max", "/sys/fs/cgroup/unified/memory.max",
            "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us",
            "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us",
            "/sys/fs/cgroup/memory/process_api/5a90/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/process_api/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes"]),
        # a container with a cgroup namespace: it sees its cgroup as the root
        ("0::/\n", MOUNTS_V2, ["/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/memory.max"]),
        # without one: its own cgroup is what is mounted (mountinfo's root names it)
        (SELF_DOCKER, MOUNTS_BIND, [
            "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us",
            "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes"]),
        # a cgroup outside the mounted part of the hierarchy: the mount's own files only
        ("0::/elsewhere\n", MOUNTS_V2.replace(" / /sys/fs/cgroup ", " /kube /sys/fs/cgroup "),
         ["/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/memory.max"]),
        # a cgroup above the process's cgroup namespace's root (seen from inside it)
        ("0::/../../other\n", MOUNTS_V2, ["/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/memory.max"]),
        # a mount point with a space (mountinfo writes \040)
        ("0::/a\n", MOUNTS_V2.replace("/sys/fs/cgroup", "/cg\\040roups"),
         ["/cg roups/a/cpu.max", "/cg roups/a/memory.max", "/cg roups/cpu.max",
          "/cg roups/memory.max"]),
        # no cgroup filesystem mounted, or not in the hierarchy mounted: nothing to read
        (SELF_V2, PROC, []),
        ("1:cpu:/x\n", MOUNTS_V2, []),
    ],
    ids=["v2", "hybrid-sandbox", "v2-namespace", "v1-bind-mount", "outside-mount",
         "above-namespace-root", "escaped-mount-point", "no-cgroupfs", "other-hierarchy"],
)  # fmt: skip
def test_limit_files(self_cgroup: str, mountinfo: str, files: list[str]) -> None:
    assert limit_files(self_cgroup, mountinfo) == files


V2, V1 = "/sys/fs/cgroup/a", "/sys/fs/cgroup/cpu/a"


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({f"{V2}/cpu.max": "max 100000\n"}, None),
        ({f"{V2}/cpu.max": "150000 100000\n"}, (150000, 100000)),
        ({f"{V2}/cpu.max": "50000\n"}, (50000, 100000)),  # no period: the kernel's default
        # an ancestor's quota binds too: the tightest wins
        ({f"{V2}/b/cpu.max": "max 100000\n", f"{V2}/cpu.max": "50000 100000\n",
          "/sys/fs/cgroup/cpu.max": "300000 100000\n"}, (50000, 100000)),
        ({f"{V1}/cpu.cfs_quota_us": "-1\n", f"{V1}/cpu.cfs_period_us": "100000\n"}, None),
        ({f"{V1}/cpu.cfs_quota_us": "200000\n", f"{V1}/cpu.cfs_period_us": "50000\n"},
         (200000, 50000)),
        ({f"{V1}/cpu.cfs_quota_us": "50000\n"}, (50000, 100000)),  # period unreadable
        # a period alone, garbage, a zero period: no limit read
        ({f"{V1}/cpu.cfs_period_us": "100000\n"}, None),
        ({f"{V2}/cpu.max": "lots\n", f"{V1}/cpu.cfs_quota_us": ""}, None),
        ({f"{V2}/cpu.max": "100000 0\n"}, None),
        # v1 and v2 both limit (hybrid): the tightest
        ({f"{V2}/cpu.max": "150000 100000", f"{V1}/cpu.cfs_quota_us": "100000"}, (100000, 100000)),
        ({f"{V2}/memory.max": "1000"}, None),
    ],
    ids=["v2-max", "v2-quota", "v2-no-period", "v2-ancestors", "v1-unlimited", "v1-quota",
         "v1-no-period", "v1-period-only", "garbage", "zero-period", "v1-and-v2", "not-cpu"],
)  # fmt: skip
def test_cpu_limit(files: dict[str, str], limit: tuple[int, int] | None) -> None:
    assert cpu_limit(files) == limit


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({f"{V2}/memory.max": "max\n"}, None),
        ({f"{V2}/memory.max": "536870912\n"}, 536870912),
        # v1's "no limit" is the largest page count times the page size (4 KiB and 64 KiB pages)
        ({f"{V1}/memory.limit_in_bytes": "9223372036854771712\n"}, None),
        ({f"{V1}/memory.limit_in_bytes": "9223372036854710272\n"}, None),
        ({f"{V1}/memory.limit_in_bytes": "1073741824\n"}, 1073741824),
        # a parent's lower limit binds its children
        ({f"{V2}/b/memory.max": "max", f"{V2}/memory.max": "2147483648",
          "/sys/fs/cgroup/memory.max": "4294967296"}, 2147483648),
        ({f"{V2}/memory.max": "nonsense", f"{V2}/cpu.max": "1000 100000"}, None),
    ],
    ids=["v2-max", "v2-limit", "v1-unlimited-4k", "v1-unlimited-64k", "v1-limit", "ancestors",
         "garbage"],
)  # fmt: skip
def test_memory_limit(files: dict[str, str], limit: int | None) -> None:
    assert memory_limit(files) == limit


MEMINFO = "MemTotal:       24683584 kB\nMemFree:        22877000 kB\nMemAvailable:   24035504 kB\n"


@pytest.mark.parametrize(
    ("meminfo", "total"),
    [
        (MEMINFO, 24683584 * 1024),
        ("MemFree: 1 kB\n", None),
        ("MemTotal: lots kB\n", None),
        ("", None),
    ],
    ids=["kb", "missing", "garbage", "empty"],
)
def test_mem_total(meminfo: str, total: int | None) -> None:
    assert mem_total(meminfo) == total


DEBIAN = (
    'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\n'
    'VERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n'
)


@pytest.mark.parametrize(
    ("text", "variables"),
    [
        (DEBIAN, {"PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)", "NAME": "Debian GNU/Linux",
                  "VERSION_ID": "12", "VERSION": "12 (bookworm)", "VERSION_CODENAME": "bookworm",
                  "ID": "debian"}),
        # comments, blank lines, single quotes, escapes, a line without '='
        ("# os\n\nID='fedora'\nNAME=\"A \\\"b\\\"\"\njunk\n", {"ID": "fedora", "NAME": 'A "b"'}),
        # an unbalanced quote: the value with its quotes stripped
        ('ID="arch\n', {"ID": "arch"}),
    ],
    ids=["debian", "quoting", "unbalanced"],
)  # fmt: skip
def test_os_release(text: str, variables: dict[str, str]) -> None:
    assert os_release(text) == variables


HOST = Readings(
    cpus_allowed=2,
    meminfo=MEMINFO,
    os_release=DEBIAN,
    kernel="6.1.0-18-amd64",
    disk_free=84060901376,
)
FACTS = {
    "fleet.cpus": "2",
    "fleet.memory": str(24683584 * 1024),
    "fleet.disk": "84060901376",
    "fleet.kernel": "6.1.0-18-amd64",
    "fleet.os": "debian",
    "fleet.os-version": "12",
}


def host(**changes: object) -> Readings:
    return replace(HOST, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("readings", "facts"),
    [
        # a machine without limits: its CPUs, its memory
        (HOST, FACTS),
        # a quota of 1.5 CPUs on 2: a fraction
        (host(cgroup_files={f"{V2}/cpu.max": "150000 100000"}), {**FACTS, "fleet.cpus": "1.5"}),
        # a quota above the CPUs it may run on: the CPUs
        (host(cgroup_files={f"{V2}/cpu.max": "800000 100000"}), FACTS),
        # a third of a CPU: two decimals, rounded down; a tiny quota is never 0
        (host(cgroup_files={f"{V1}/cpu.cfs_quota_us": "33333"}), {**FACTS, "fleet.cpus": "0.33"}),
        (host(cgroup_files={f"{V2}/cpu.max": "500 100000"}), {**FACTS, "fleet.cpus": "0.01"}),
        (host(cpus_allowed=1, cgroup_files={f"{V2}/cpu.max": "200000 100000"}),
         {**FACTS, "fleet.cpus": "1"}),
        # a memory limit below the machine's memory is what the machine offers; above, not
        (host(cgroup_files={f"{V2}/memory.max": "536870912"}),
         {**FACTS, "fleet.memory": "536870912"}),
        (host(cgroup_files={f"{V2}/memory.max": str(1 << 40)}), FACTS),
        # /proc/meminfo unreadable: the cgroup's limit if any, else no memory fact
        (host(meminfo=None, cgroup_files={f"{V1}/memory.limit_in_bytes": "1073741824"}),
         {**FACTS, "fleet.memory": "1073741824"}),
        (host(meminfo=None), {k: v for k, v in FACTS.items() if k != "fleet.memory"}),
        # no os-release; one without VERSION_ID (a rolling release)
        (host(os_release=None),
         {k: v for k, v in FACTS.items() if k not in ("fleet.os", "fleet.os-version")}),
        (host(os_release="ID=arch\n"),
         {**{k: v for k, v in FACTS.items() if k != "fleet.os-version"}, "fleet.os": "arch"}),
        # the free disk unknown; a value that cannot be metadata (a space, a ',') is left out
        (host(disk_free=None), {k: v for k, v in FACTS.items() if k != "fleet.disk"}),
        (host(kernel="6.1 custom,build"), {k: v for k, v in FACTS.items() if k != "fleet.kernel"}),
    ],
    ids=["host", "quota-fraction", "quota-above", "third", "tiny-quota", "one-cpu",
         "memory-limit", "memory-limit-above", "no-meminfo-limit", "no-meminfo", "no-os-release",
         "no-version-id", "no-disk", "odd-kernel"],
)  # fmt: skip
def test_facts_of(readings: Readings, facts: dict[str, str]) -> None:
    assert facts_of(readings) == facts
    assert list(facts_of(readings)) == [k for k in FACTS if k in facts]  # in KEYS order
