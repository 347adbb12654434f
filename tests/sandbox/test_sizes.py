"""Machine sizes of the sandbox (fleetd/sandbox/sizes.py), the pure part: the flags' values per
machine, and which cgroup files give a machine its size on a host's cgroup layout. That a
machine's fleetd then measures them is tests/e2e/test_resources.py, on real cgroups."""

from __future__ import annotations

import pytest

from fleetd.facts.parse import CgroupMount
from fleetd.sandbox.sizes import HostCgroups, Size, check_host, limit_cgroups, sizes_of
from fleetd.sandbox.state import SandboxError

G, M = 1 << 30, 1 << 20
SLICE = "fleetdsabcdem1.slice"


def v1(controller: str, root: str = "/") -> CgroupMount:
    return CgroupMount(1, root, f"/sys/fs/cgroup/{controller}", frozenset({controller}))


V2_UNIFIED = CgroupMount(2, "/", "/sys/fs/cgroup/unified")  # systemd's hybrid layout
V2_ONLY = CgroupMount(2, "/", "/sys/fs/cgroup")  # a unified host
HYBRID = HostCgroups(
    (v1("cpu"), v1("memory"), V2_UNIFIED),
    {"cpu": "/", "memory": "/process_api/abc", "": "/"},
    frozenset({"hugetlb"}),
)


@pytest.mark.parametrize(
    ("machines", "flags", "sizes"),
    [
        # one value per machine, in order
        (3, {"memory": ["1G,2G,4G"]}, [Size(G), Size(2 * G), Size(4 * G)]),
        # the flag repeated per machine, like --metadata: the same
        (2, {"memory": ["1G", "2G"]}, [Size(G), Size(2 * G)]),
        # machines past the list get no limit; spaces around a value are ignored
        (3, {"cpus": ["0.5, 1"]}, [Size(cpus=0.5), Size(cpus=1.0), Size()]),
        # every flag at once
        (
            1,
            {
                "memory": ["512M"],
                "cpus": ["2"],
                "reserved_memory": ["256M"],
                "reserved_cpu": [".5"],
            },
            [Size(512 * M, 2.0, 256 * M, 0.5)],
        ),
        # a reservation of 0 is none
        (1, {"reserved_memory": ["0"]}, [Size()]),
    ],
    ids=["list", "repeated", "fewer-than-machines", "all-flags", "zero-reservation"],
)
def test_each_machine_gets_the_values_in_order(
    machines: int, flags: dict[str, list[str]], sizes: list[Size]
) -> None:
    assert sizes_of(machines, **flags) == sizes


@pytest.mark.parametrize(
    ("machines", "flags", "error"),
    [
        (2, {"memory": ["1G,2G,4G"]}, "--memory 1G,2G,4G: 3 values for 2 machines"),
        (1, {"cpus": ["1", "2"]}, "--cpus 1,2: 2 values for 1 machine"),
        (3, {"memory": ["1G,,2G"]}, "--memory '' (m2): not a size"),
        (1, {"memory": ["-1G"]}, "--memory -1G (m1): not a size"),
        (1, {"memory": ["50%"]}, "--memory 50% (m1): not a size"),
        (1, {"memory": ["128M"]}, "--memory 128M (m1): a machine needs at least 256M"),
        (1, {"memory": ["1000000001"]}, "--memory 1000000001 (m1): not a whole number of pages"),
        (1, {"cpus": ["150%"]}, "--cpus 150% (m1): not a number of CPUs"),
        (1, {"cpus": ["0"]}, "--cpus 0 (m1): not a number of CPUs"),
        (1, {"cpus": ["1.125"]}, "--cpus 1.125 (m1): at most two decimals"),
        (1, {"cpus": ["0.09"]}, "--cpus 0.09 (m1): a machine needs at least 0.1 CPU"),
        (1, {"reserved_cpu": ["x"]}, "--reserved-cpu x (m1): not a number of CPUs"),
    ],
    ids=[
        "too-many",
        "too-many-repeated",
        "empty",
        "negative",
        "percent",
        "too-small",
        "not-pages",
        "cpu-percent",
        "zero-cpus",
        "thousandths",
        "too-few-cpus",
        "bad-reservation",
    ],
)
def test_a_value_refused_names_the_flag_the_value_and_the_machine(
    machines: int, flags: dict[str, list[str]], error: str
) -> None:
    with pytest.raises(SandboxError) as refused:
        sizes_of(machines, **flags)
    assert str(refused.value).startswith(error)


@pytest.mark.parametrize(
    ("size", "host", "limits"),
    [
        # hybrid: v1 controllers, below the caller's own cgroup of each hierarchy
        (
            Size(G, 0.5),
            HYBRID,
            {
                f"/sys/fs/cgroup/memory/process_api/abc/{SLICE}": {"memory.limit_in_bytes": str(G)},
                f"/sys/fs/cgroup/cpu/{SLICE}": {
                    "cpu.cfs_period_us": "100000",
                    "cpu.cfs_quota_us": "50000",
                },
            },
        ),
        # the caller's cgroup outside what is mounted (another cgroup namespace): the mount's top
        (
            Size(G),
            HostCgroups((v1("memory", root="/lxc/c1"),), {"memory": "/other"}, frozenset()),
            {f"/sys/fs/cgroup/memory/{SLICE}": {"memory.limit_in_bytes": str(G)}},
        ),
        # ... or inside it: relative to the mount's root
        (
            Size(G),
            HostCgroups((v1("memory", root="/lxc/c1"),), {"memory": "/lxc/c1/job"}, frozenset()),
            {f"/sys/fs/cgroup/memory/job/{SLICE}": {"memory.limit_in_bytes": str(G)}},
        ),
        # unified host: the machine's own cgroup at the top, both limits in it
        (
            Size(2 * G, 1.5),
            HostCgroups((V2_ONLY,), {"": "/user.slice"}, frozenset({"cpu", "memory", "io"})),
            {f"/sys/fs/cgroup/{SLICE}": {"memory.max": str(2 * G), "cpu.max": "150000 100000"}},
        ),
        # a controller on v1, the other on v2
        (
            Size(G, 2.0),
            HostCgroups((v1("memory"), V2_UNIFIED), {"memory": "/"}, frozenset({"cpu"})),
            {
                f"/sys/fs/cgroup/memory/{SLICE}": {"memory.limit_in_bytes": str(G)},
                f"/sys/fs/cgroup/unified/{SLICE}": {"cpu.max": "200000 100000"},
            },
        ),
        # no size, no cgroup; reservations are fleetd's options, not limits
        (Size(reserved_memory=G), HYBRID, {}),
    ],
    ids=["hybrid", "outside-mount", "inside-mount", "unified", "mixed", "no-limit"],
)
def test_the_limits_go_where_the_host_runs_each_controller(
    size: Size, host: HostCgroups, limits: dict[str, dict[str, str]]
) -> None:
    assert limit_cgroups(SLICE, size, host) == limits


@pytest.mark.parametrize(
    ("size", "host", "error"),
    [
        # the memory controller bound nowhere (v2 lists only hugetlb)
        (
            Size(G),
            HostCgroups((v1("cpu"), V2_UNIFIED), {}, frozenset({"hugetlb"})),
            "--memory needs the cgroup memory controller, which this host does not offer "
            "(cgroup v1 controllers: cpu; cgroup v2 controllers: hugetlb)",
        ),
        # no cgroup mounted at all
        (
            Size(cpus=1.0),
            HostCgroups((), {}, frozenset()),
            "--cpus needs the cgroup cpu controller, which this host does not offer "
            "(cgroup v1 controllers: none; cgroup v2 controllers: none)",
        ),
    ],
    ids=["no-memory-controller", "no-cgroups"],
)
def test_a_size_no_controller_can_enforce_is_refused(
    size: Size, host: HostCgroups, error: str
) -> None:
    with pytest.raises(SandboxError) as refused:
        limit_cgroups(SLICE, size, host)
    assert str(refused.value) == error


def test_a_size_larger_than_the_host_is_refused() -> None:
    check_host([Size(4 * G, 2.0)], 4 * G, 2.0)  # as large as the host: fine
    check_host([Size(64 * G, 64.0)], None, None)  # the host's size unknown: not checked
    with pytest.raises(SandboxError, match=r"^--memory 8G \(m2\): more than this host's 4G"):
        check_host([Size(G), Size(8 * G)], 4 * G, 2.0)
    with pytest.raises(SandboxError, match=r"^--cpus 3 \(m1\): more than this host's 2 CPUs"):
        check_host([Size(cpus=3.0)], 4 * G, 2.0)


def test_what_a_size_tells_fleetd_and_the_status() -> None:
    size = Size(G, 0.5, 256 * M, 0.25)
    assert size.fleetd_flags() == [f"--reserved-memory={256 * M}", "--reserved-cpu=0.25"]
    assert size.words() == "memory=1G,cpus=0.5,reserved-memory=256M,reserved-cpu=0.25"
    assert (Size().fleetd_flags(), Size().words(), Size().limited) == ([], "", False)
