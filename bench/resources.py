"""Resource-aware placement (issue 21): the pure planner with reservations.

(a) Packing: 100 simulated machines of mixed sizes (2 to 64 GiB, 1 to 32 CPUs) and 1,000 units
    whose random reservations add up to 85% of the cluster's memory and CPUs, planned under each
    strategy: how many units are placed, whether any machine is over-committed, how many
    machines are used. Baselines from the same run: a first-fit-decreasing packing of the same
    units (largest units first into the largest machines first, both dimensions checked), and
    the capacity lower bound (the fewest largest machines whose memory and CPUs add up to the
    demand).
(b) Speed: 10,000 units with reservations on 1,000 machines, each strategy, median of 3,
    against the planner on the same units without reservations (fleet's least-loaded order).

Set BENCH_QUICK=1 for a smoke run (it writes nothing).
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import write_block
from fleetd.model import JobState
from fleetd.reconcile.engine import Action, plan_engine
from fleetd.reconcile.scheduler import ClusterState, JobSpec, MachineSpec, Strategy
from fleetd.unit import parse_unit

QUICK = bool(os.environ.get("BENCH_QUICK"))
G = 1 << 30
LOAD = 0.85  # of the cluster's memory and CPUs
SIZES = [(2, 1), (4, 2), (8, 4), (16, 8), (32, 16), (64, 32)]  # GiB, CPUs


def machines_of(count: int, rnd: random.Random) -> list[MachineSpec]:
    out = []
    for i in range(count):
        gib, cpus = rnd.choice(SIZES)
        out.append(
            MachineSpec(f"{i:032x}", {"fleet.memory": str(gib * G), "fleet.cpus": str(cpus)})
        )
    return out


def jobs_of(machines: list[MachineSpec], count: int, rnd: random.Random) -> dict[str, JobSpec]:
    """`count` units whose reservations add up to LOAD of the machines' memory and CPUs, each
    one small enough for the smallest machine."""
    memory = sum(int(m.metadata["fleet.memory"]) for m in machines) * LOAD
    cpus = sum(float(m.metadata["fleet.cpus"]) for m in machines) * LOAD
    shares = [(rnd.uniform(0.2, 1.8), rnd.uniform(0.2, 1.8)) for _ in range(count)]
    mem_total, cpu_total = sum(s[0] for s in shares), sum(s[1] for s in shares)
    jobs = {}
    for i, (m, c) in enumerate(shares):
        mem_bytes = min(int(memory * m / mem_total), 2 * G)
        cpu = min(round(cpus * c / cpu_total, 2), 1.0)
        name = f"r{i}.service"
        unit = parse_unit(
            "[Service]\nExecStart=/bin/true\n[X-Fleet]\n"
            f"MemoryReservation={mem_bytes}\nCPUReservation={cpu}\n"
        )
        jobs[name] = JobSpec(name, JobState.LAUNCHED, unit.requirements(name))
    return jobs


def capacity(m: MachineSpec) -> tuple[int, float]:
    return int(m.metadata["fleet.memory"]), float(m.metadata["fleet.cpus"])


def first_fit_decreasing(machines: list[MachineSpec], jobs: dict[str, JobSpec]) -> int:
    """Machines used by first-fit decreasing: units by memory then CPUs, largest first, each
    into the first machine (largest first) with room in both."""
    order = sorted(machines, key=lambda m: capacity(m), reverse=True)
    free = [list(capacity(m)) for m in order]
    used = set()
    for job in sorted(jobs.values(), key=lambda j: j.requirements.reserves, reverse=True):
        mem, cpu = job.requirements.reserves
        for i, room in enumerate(free):
            if room[0] >= mem and room[1] >= cpu - 1e-9:
                room[0] -= mem
                room[1] -= cpu
                used.add(i)
                break
    return len(used)


def lower_bound(machines: list[MachineSpec], jobs: dict[str, JobSpec]) -> int:
    """The fewest machines whose memory and CPUs could hold the demand (largest first)."""
    need_mem = sum(j.requirements.reserves[0] for j in jobs.values())
    need_cpu = sum(j.requirements.reserves[1] for j in jobs.values())

    def fewest(values: list[float], need: float) -> int:
        total = 0.0
        for k, v in enumerate(sorted(values, reverse=True), start=1):
            total += v
            if total >= need:
                return k
        return len(values)

    return max(
        fewest([capacity(m)[0] for m in machines], need_mem),
        fewest([capacity(m)[1] for m in machines], need_cpu),
    )


def packing(seed: int) -> dict[str, dict[str, float]]:
    rnd = random.Random(seed)
    machines = machines_of(100, rnd)
    jobs = jobs_of(machines, 1000, rnd)
    out: dict[str, dict[str, float]] = {}
    for strategy in Strategy:
        plan = plan_engine(jobs, machines, {}, strategy=strategy)
        placed = {t.job: t.machine_id for t in plan.tasks if t.action is Action.SCHEDULE}
        state = ClusterState(machines, jobs, placed)
        over = 0
        for m in machines:
            mem, cpu = state.reserved_on(m.id)
            cap = state.capacity(m.id)
            over += mem > (cap.memory or 0) or cpu > (cap.cpus or 0) + 1e-9
        out[strategy.value] = {
            "placed": len(placed), "overcommitted": over, "used": len(set(placed.values())),
        }  # fmt: skip
    out["ffd"] = {"used": first_fit_decreasing(machines, jobs)}
    out["bound"] = {"used": lower_bound(machines, jobs)}
    return out


def speed(runs: int = 3) -> dict[str, float]:
    rnd = random.Random(7)
    count, units = (100, 1000) if QUICK else (1000, 10_000)
    machines = machines_of(count, rnd)
    jobs = jobs_of(machines, units, rnd)
    plain = {n: JobSpec(n, j.desired) for n, j in jobs.items()}
    times: dict[str, float] = {}
    for label, these, strategy in [
        ("plain", plain, Strategy.LEASTLOADED),
        *((s.value, jobs, s) for s in Strategy),
    ]:
        samples = []
        for _ in range(runs):
            t = time.perf_counter()
            plan_engine(these, machines, {}, strategy=strategy)
            samples.append(time.perf_counter() - t)
        times[label] = statistics.median(samples)
    return times


def main() -> None:
    packs = packing(1)
    times = speed()
    for name, figures in packs.items():
        print(name, figures)
    print(times)
    ffd = packs["ffd"]["used"]
    rows = [
        "| measure | fleetd | baseline (same run) | ratio | goal |",
        "|---|---|---|---|---|",
    ]
    for strategy in Strategy:
        p = packs[strategy.value]
        rows.append(
            f"| 100 machines of 2-64 GiB and 1-32 CPUs, 1,000 units reserving 85% of both: "
            f"`scheduler={strategy.value}` | {p['placed']:.0f} placed, {p['overcommitted']:.0f} "
            f"machines over-committed, {p['used']:.0f} machines used | first-fit decreasing: "
            f"{ffd} machines (capacity bound: {packs['bound']['used']}) | "
            f"{p['used'] / ffd:.2f}x | all placed, none over-committed"
            + ("; ≤ 1.1x machines |" if strategy is Strategy.BINPACK else " |")
        )
    units = "1,000 units on 100" if QUICK else "10,000 units on 1,000"
    for strategy in Strategy:
        rows.append(
            f"| planner, {units} machines, every unit reserving, `scheduler={strategy.value}`, "
            f"median of 3 | {times[strategy.value]:.3f} s | the same units without "
            f"reservations: {times['plain']:.3f} s | {times[strategy.value] / times['plain']:.1f}x"
            " | < 1 s |"
        )
    markdown = "\n".join(rows) + (
        "\n\nThe units' reservations are random (memory and CPUs drawn independently, scaled to "
        "85% "
        "of the cluster, at most 2 GiB and 1 CPU each so that any machine could take any unit). "
        "Machines are filed by classes of free memory and CPU (`fleetd/reconcile/fit.py`): a "
        "unit is only offered machines that may have room for it.\n\nReproduce: `make bench` (or "
        "`.venv/bin/python bench/resources.py`)."
    )
    print(markdown)
    if not QUICK:
        write_block("resources", markdown)


if __name__ == "__main__":
    main()
