"""Resource-aware placement on machines of different sizes: a real sandbox of three machines
whose cgroups allow 1G, 2G and 4G of memory and 0.5, 1 and 2 CPUs (`fleetd sandbox up --memory
--cpus`), m3 holding 0.5 CPU back for the host (`--reserved-cpu`). Each machine's fleetd
measures its size (`fleet.memory`, `fleet.cpus`: nothing is given as metadata), and the real
`fleetctl` places units with `MemoryReservation=`, `CPUReservation=` or a `[Service]
MemoryMax=` only where they fit. Where units run is read from the registry; each test destroys
what it started. Units are sleep loops: a reservation is a promise, not a use.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from fleetd.rules.sizes import size
from tests.faults.harness import (
    BIN,
    COMMAND_TIMEOUT,
    SLACK,
    Cluster,
    active_on,
    logs_on_failure,
    placed_and_running,
    placed_on,
    sandbox_up,
)
from tests.waiting import until

pytestmark = pytest.mark.root

AGENT_TTL = 3.0
MEMORY = {"m1": 1 << 30, "m2": 2 << 30, "m3": 4 << 30}
CPUS = {"m1": "0.5", "m2": "1", "m3": "2"}
UP_ARGS = ("--memory=1G,2G,4G", "--cpus", "0.5,1,2", "--reserved-cpu=0,0,0.5")
DEADLINE = 30.0  # seconds: a bound against hanging, not a speed goal
LOOP = "[Service]\n{service}ExecStart=/bin/sh -c 'while true; do sleep 1; done'\n"


@pytest.fixture(scope="module")
def sized(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """The module's sandbox; after `down` none of the cgroups holding its limits is left."""
    directory = tmp_path_factory.mktemp("sized")
    limits: set[str] = set()
    keep_logs = logs_on_failure(request, tmp_path_factory)
    with sandbox_up(directory, agent_ttl=AGENT_TTL, up_args=UP_ARGS, keep_logs=keep_logs):
        cluster = Cluster(directory, AGENT_TTL)
        limits = {d for r in cluster.state.machines for d in r.limits}
        yield cluster
    assert len(limits) == 6  # a memory and a cpu cgroup per machine (cgroup v1 on this host)
    assert not existing(limits)


def existing(directories: Iterable[str]) -> list[str]:
    return [d for d in directories if Path(d).exists()]


def write(cluster: Cluster, name: str, *, x_fleet: str = "", service: str = "") -> str:
    text = LOOP.format(service=service)
    return cluster.write_unit(name, text + (f"\n[X-Fleet]\n{x_fleet}\n" if x_fleet else ""))


def reasons(cluster: Cluster) -> dict[str, str]:
    """Each unit's REASON column of `fleetctl list-unit-files -l`."""
    lines = cluster.fleetctl("m1", "list-unit-files", "-l").stdout.splitlines()
    assert lines[0].split("\t")[-1] == "REASON"
    return {line.split("\t")[0]: line.split("\t")[-1] for line in lines[1:]}


async def test_each_machine_measures_the_size_its_cgroups_allow(sized: Cluster) -> None:
    async with sized.registry() as registry:
        snapshot = await registry.snapshot()
    for name, memory in MEMORY.items():
        record = sized.machine(name)
        facts = snapshot.machines[record.id].metadata
        assert (facts["fleet.memory"], facts["fleet.cpus"]) == (str(memory), CPUS[name])
        assert facts.get("fleet.cpus-reserved") == ("0.5" if name == "m3" else None)
        # the limits are the kernel's: every process of the machine runs in the cgroups
        for directory, files in record.limits.items():
            assert str(record.fleetd_pid) in (Path(directory) / "cgroup.procs").read_text()
            for file, value in files.items():
                assert (Path(directory) / file).read_text().strip() == value
    status = sized.sandbox_command("status").stdout
    assert "fleetd running\tmemory=1G,cpus=0.5\n" in status
    assert "fleetd running\tmemory=4G,cpus=2,reserved-cpu=0.5\n" in status


async def test_a_unit_larger_than_every_machine_is_not_placed(sized: Cluster) -> None:
    huge = write(sized, "huge.service", x_fleet="MemoryReservation=5G")
    async with sized.registry() as registry:
        sized.fleetctl("m1", "start", "--no-block", huge)
        await until(registry, lambda s: huge in s.jobs, DEADLINE)
    why = sized.fleetctl("m1", "why", huge).stdout
    assert f"Unit {huge} is not placed on any machine." in why
    assert "Reason: memory exhausted" in why
    assert "MemoryReservation=5G: memory: 3 of 3 machines rejected" in why
    for name, free in (("m1", "1G"), ("m2", "2G"), ("m3", "4G")):
        assert f"{sized.machine(name).id[:8]}: {free} free, 5G needed" in why
    assert reasons(sized)[huge].startswith("memory exhausted")
    sized.fleetctl("m1", "destroy", huge)


async def test_reservations_fill_each_machine_up_to_its_memory(sized: Cluster) -> None:
    """Eight units of 900M: the 1G machine takes one, the 2G two, the 4G four; the eighth
    has nowhere to go."""
    write(sized, "r@.service", x_fleet="MemoryReservation=900M")
    names = [f"r@{i}.service" for i in range(1, 9)]
    async with sized.registry() as registry:
        sized.fleetctl("m1", "start", "--no-block", *names)
        snapshot = await until(registry, placed_and_running(names, 7), DEADLINE + SLACK)
    per_machine = Counter(placed_on(snapshot, n) for n in names)
    (pending,) = [n for n in names if placed_on(snapshot, n) is None]
    assert {sized.by_id(m).name: n for m, n in per_machine.items() if m} == {
        "m1": 1, "m2": 2, "m3": 4,
    }  # fmt: skip
    for machine_id, count in per_machine.items():
        if machine_id is not None:  # no machine holds more than it measured
            measured = int(snapshot.machines[machine_id].metadata["fleet.memory"])
            assert count * size("900M") <= measured
    assert reasons(sized)[pending].startswith("memory exhausted")
    why = sized.fleetctl("m1", "why", pending).stdout
    assert "MemoryReservation=900M: memory: 3 of 3 machines rejected" in why
    # list-machines -l shows each machine's reserved / offered, as numbers in JSON
    table = sized.fleetctl("m1", "list-machines", "-l").stdout.splitlines()
    assert table[0].split("\t")[-2:] == ["CPU-USE", "MEMORY-USE"]
    use = {line.split("\t")[0]: line.split("\t")[-1] for line in table[1:]}
    expected = {"m1": "900M/1G", "m2": "1.8G/2G", "m3": "3.5G/4G"}
    assert {sized.by_id(m).name: use[m] for m in use} == expected
    rows = json.loads(
        sized.fleetctl(
            "m1",
            "list-machines",
            "--full",
            "--output",
            "json",
            "--fields",
            "machine,memory,memory-reserved",
        ).stdout
    )
    reserved = {sized.by_id(r["machine"]).name: r["memory-reserved"] for r in rows}
    assert reserved == {"m1": size("900M"), "m2": 2 * size("900M"), "m3": 4 * size("900M")}
    assert {sized.by_id(r["machine"]).name: r["memory"] for r in rows} == MEMORY
    sized.fleetctl("m1", "destroy", *names)


async def test_a_memory_max_is_reserved_and_lands_where_it_fits(sized: Cluster) -> None:
    """`[Service] MemoryMax=3G` without any [X-Fleet] option: only the 4G machine can take it;
    its systemd gets the limit."""
    big = write(sized, "big.service", service="MemoryMax=3G\n")
    m3 = sized.machine("m3")
    async with sized.registry() as registry:
        sized.fleetctl("m1", "start", "--no-block", big)
        snapshot = await until(registry, lambda s: placed_on(s, big) in active_on(s, big), DEADLINE)
    assert placed_on(snapshot, big) == m3.id
    assert (
        "MemoryMax=3G: holds (memory 3G of 4G reserved)" in sized.fleetctl("m1", "why", big).stdout
    )
    shown = sized.run_in(
        "m3", "systemctl", "--user", "show", "-p", "MemoryMax", "-p", "MainPID", big
    )
    props = dict(line.split("=", 1) for line in shown.stdout.splitlines())
    assert props["MemoryMax"] == str(3 << 30)
    # and the kernel bounds it by its machine's memory: it runs in m3's 4G memory cgroup
    memory_cgroup = next(d for d, files in m3.limits.items() if "memory.limit_in_bytes" in files)
    assert props["MainPID"] in (Path(memory_cgroup) / "cgroup.procs").read_text().split()
    sized.fleetctl("m1", "destroy", big)


async def test_cpus_held_back_for_the_host_are_not_offered(sized: Cluster) -> None:
    """m3 measures 2 CPUs and holds 0.5 back: a unit reserving 2 CPUs fits nowhere."""
    cpu = write(sized, "cpu.service", x_fleet="CPUReservation=2")
    async with sized.registry() as registry:
        sized.fleetctl("m1", "start", "--no-block", cpu)
        await until(registry, lambda s: cpu in s.jobs, DEADLINE)
    why = sized.fleetctl("m1", "why", cpu).stdout
    assert "Reason: cpu exhausted" in why
    assert f"{sized.machine('m3').id[:8]}: 1.5 free, 2 needed" in why
    sized.fleetctl("m1", "destroy", cpu)


async def test_restart_and_start_keep_the_machines_size(sized: Cluster) -> None:
    m1, m2 = sized.machine("m1"), sized.machine("m2")
    async with sized.registry() as registry:
        sized.sandbox_command("restart", "m2")  # a new fleetd, in the same cgroups
        sized.sandbox_command("kill", "m1")  # the machine dies, its cgroups with it
        assert not existing(m1.limits)
        await until(registry, lambda s: m1.id not in s.machines, AGENT_TTL + SLACK)
        sized.sandbox_command("start", "m1")
        snapshot = await registry.snapshot()
    for record in (m1, m2):
        assert snapshot.machines[record.id].metadata["fleet.memory"] == str(MEMORY[record.name])
    # m2's new fleetd measured anew, in the same cgroups
    measured = [line for line in sized.log_of("m2").splitlines() if "machine_measured" in line]
    assert len(measured) == 2 and f'"fleet.memory": "{MEMORY["m2"]}"' in measured[-1]
    m2_after = sized.machine("m2")
    for directory in m2.limits:
        assert str(m2_after.fleetd_pid) in (Path(directory) / "cgroup.procs").read_text()
    m1_after = sized.machine("m1")
    assert m1_after.limits == m1.limits
    for directory in m1.limits:
        assert str(m1_after.fleetd_pid) in (Path(directory) / "cgroup.procs").read_text()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--memory", "1G,2G,4G,8G"], "--memory 1G,2G,4G,8G: 4 values for 3 machines"),
        (["--memory", "1G", "--memory", "2x"], "--memory 2x (m2): not a size"),
        (["--memory", "100M"], "--memory 100M (m1): a machine needs at least 256M"),
        (["--memory", "300000001"], "--memory 300000001 (m1): not a whole number of pages"),
        (["--memory", "64T"], "--memory 64T (m1): more than this host's"),
        (["--cpus", "1,0.333"], "--cpus 0.333 (m2): at most two decimals"),
        (["--cpus", "0.05"], "--cpus 0.05 (m1): a machine needs at least 0.1 CPU"),
        (["--cpus", "1000"], "--cpus 1000 (m1): more than this host's"),
        (["--reserved-memory", "lots"], "--reserved-memory lots (m1): not a size"),
    ],
    ids=["too-many", "not-a-size", "too-small", "not-pages", "larger-than-host",
         "hundredths", "too-few-cpus", "more-cpus-than-host", "bad-reservation"],
)  # fmt: skip
def test_sizes_that_cannot_be_given_are_refused_and_nothing_starts(
    tmp_path: Path, args: list[str], error: str
) -> None:
    directory = tmp_path / "box"
    done = subprocess.run(
        [BIN / "fleetd", "sandbox", "up", "--dir", str(directory), *args],
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith(f"Error: {error}"), done.stderr
    assert not directory.exists()
