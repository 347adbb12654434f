"""Machines' capacity and use (`fleetd/reconcile/capacity.py`): from a registry snapshot, what
each machine offers, holds back, has reserved by its units and has free; and which machines the
engine reports over-committed."""

from __future__ import annotations

import pytest

from fleetd.model import Job, JobState, Machine, UnitContent, UnitState
from fleetd.reconcile.capacity import (
    Amount,
    ClusterUse,
    MachineUse,
    OvercommitChange,
    cluster_use,
    overcommit_changes,
    placed_after,
)
from fleetd.registry import Snapshot
from fleetd.unit import UnitFile, parse_unit

M1, M2, M3 = "1" * 32, "2" * 32, "3" * 32
G = 1 << 30
M = 1 << 20
LAUNCHED, INACTIVE = JobState.LAUNCHED, JobState.INACTIVE


def unit(service: str = "", xfleet: str = "") -> UnitFile:
    return parse_unit(
        f"[Service]\nExecStart=/bin/true\n{service}" + (f"[X-Fleet]\n{xfleet}\n" if xfleet else "")
    )


def facts(memory: int | None = None, cpus: str | None = None, **more: str) -> dict[str, str]:
    """A machine's facts as its fleetd registers them (memory in bytes)."""
    out = {} if memory is None else {"fleet.memory": str(memory)}
    if cpus is not None:
        out["fleet.cpus"] = cpus
    return {**out, **{f"fleet.{k.replace('_', '-')}": v for k, v in more.items()}}


def cluster(
    units: dict[str, UnitFile | tuple[UnitFile, JobState]],
    machines: dict[str, dict[str, str]],
    placements: dict[str, str] | None = None,
    *,
    dynamic: dict[str, dict[str, str]] | None = None,
    running: tuple[str, ...] = (),
) -> Snapshot:
    """A registry: `units` by name (launched unless a state is given), `machines` by ID with
    their metadata, `placements`, dynamic metadata, units `running` where placed."""
    jobs, contents = {}, {}
    for name, entry in units.items():
        u, desired = entry if isinstance(entry, tuple) else (entry, LAUNCHED)
        jobs[name] = Job(name, u.hash, desired)
        contents[u.hash] = UnitContent(u)
    placements = placements or {}
    return Snapshot(
        revision=3,
        jobs=jobs,
        units=contents,
        machines={mid: Machine(mid, "10.0.0.1", meta) for mid, meta in machines.items()},
        placements=placements,
        dynamic_metadata=dynamic or {},
        states={
            (n, placements[n]): UnitState(
                n, placements[n], jobs[n].unit_hash, "loaded", "active", "running"
            )
            for n in running
        },
    )


def use(
    memory: tuple[int | None, int, int] = (None, 0, 0),
    cpus: tuple[float | None, float, float] = (None, 0.0, 0.0),
    overcommit: bool = False,
    machine: str = M1,
) -> MachineUse:
    """(capacity, held, reserved) of memory and of CPUs."""
    return MachineUse(machine, Amount(*memory), Amount(*cpus), overcommit)


BIG = unit("", "MemoryReservation=2G\nCPUReservation=1.5")
SMALL = unit("MemoryMax=512M\nCPUQuota=50%\n")  # what systemd enforces is what is reserved
NOTHING = unit()
GLOBAL_1G = unit("", "Global=true\nMemoryReservation=1G")
GLOBAL_DB = unit("", "Global=true\nMachineMetadata=role=db\nCPUReservation=1")
EIGHT = facts(8 * G, "4")


@pytest.mark.parametrize(
    ("snapshot", "expected"),
    [
        pytest.param(cluster({}, {M1: {"role": "web"}}), use(), id="no-facts-capacity-unknown"),
        pytest.param(
            cluster({}, {M1: EIGHT}),
            use((8 * G, 0, 0), (4.0, 0.0, 0.0)),
            id="facts-nothing-reserved",
        ),
        # the operator holds memory and CPUs back for the host: the machine offers the rest
        pytest.param(
            cluster({}, {M1: facts(8 * G, "4", memory_reserved=str(G), cpus_reserved="0.5")}),
            use((7 * G, G, 0), (3.5, 0.5, 0.0)),
            id="held-back-for-the-host",
        ),
        pytest.param(
            cluster({"big.service": BIG}, {M1: EIGHT}, {"big.service": M1}),
            use((8 * G, 0, 2 * G), (4.0, 0.0, 1.5)),
            id="placed-unit-reserves",
        ),
        pytest.param(
            cluster(
                {"small.service": SMALL, "big.service": BIG},
                {M1: EIGHT},
                {"small.service": M1, "big.service": M1},
            ),
            use((8 * G, 0, 2 * G + 512 * M), (4.0, 0.0, 2.0)),
            id="memorymax-and-cpuquota-reserve-too",
        ),
        # a unit placed elsewhere, or on a machine that is gone, reserves nothing here
        pytest.param(
            cluster(
                {"big.service": BIG, "b.service": BIG},
                {M1: EIGHT},
                {"big.service": M2, "b.service": M3},
            ),
            use((8 * G, 0, 0), (4.0, 0.0, 0.0)),
            id="placed-elsewhere",
        ),
        pytest.param(
            cluster({"g.service": GLOBAL_1G, "n.service": NOTHING}, {M1: EIGHT}, {"n.service": M1}),
            use((8 * G, 0, G), (4.0, 0.0, 0.0)),
            id="global-unit-runs-there",
        ),
        pytest.param(
            cluster({"g.service": (GLOBAL_1G, INACTIVE)}, {M1: EIGHT}),
            use((8 * G, 0, 0), (4.0, 0.0, 0.0)),
            id="inactive-global-unit-runs-nowhere",
        ),
        pytest.param(
            cluster({"db.service": GLOBAL_DB}, {M1: {**EIGHT, "role": "web"}}),
            use((8 * G, 0, 0), (4.0, 0.0, 0.0)),
            id="global-unit-metadata-does-not-match",
        ),
        # the effective metadata: role=db set through the API makes the Global unit run here
        pytest.param(
            cluster(
                {"db.service": GLOBAL_DB},
                {M1: {**EIGHT, "role": "web"}},
                dynamic={M1: {"role": "db", "fleet.memory": str(G)}},
            ),
            use((8 * G, 0, 0), (4.0, 0.0, 1.0)),
            id="dynamic-metadata-counts-but-never-a-fact",
        ),
        # fleetd restarted with less memory: the unit running there is not moved, the machine
        # is over-committed and has nothing free
        pytest.param(
            cluster(
                {"big.service": BIG},
                {M1: facts(G, "1")},
                {"big.service": M1},
                running=("big.service",),
            ),
            use((G, 0, 2 * G), (1.0, 0.0, 1.5)),
            id="over-committed-after-a-restart",
        ),
        pytest.param(
            cluster(
                {"big.service": BIG}, {M1: facts(G, "8", overcommit="true")}, {"big.service": M1}
            ),
            use((G, 0, 2 * G), (8.0, 0.0, 1.5), overcommit=True),
            id="overcommit-allowed",
        ),
        # CPUs are floats: sums are shown rounded
        pytest.param(
            cluster(
                {
                    f"u{i}.service": unit("", f"CPUReservation={c}")
                    for i, c in enumerate(("0.1", "0.2"))
                },
                {M1: facts(None, "1")},
                {"u0.service": M1, "u1.service": M1},
            ),
            use((None, 0, 0), (1.0, 0.0, 0.3)),
            id="cpus-rounded",
        ),
        # held back more than measured: it offers nothing
        pytest.param(
            cluster({}, {M1: facts(G, "2", memory_reserved="2G", cpus_reserved="3")}),
            use((0, 2 * G, 0), (0.0, 3.0, 0.0)),
            id="held-back-more-than-measured",
        ),
    ],
)
def test_a_machines_use(snapshot: Snapshot, expected: MachineUse) -> None:
    assert cluster_use(snapshot).machines == {M1: expected}


@pytest.mark.parametrize(
    ("amount", "free", "over"),
    [
        pytest.param(Amount(None, 0, 0), None, False, id="unknown"),
        pytest.param(Amount(None, 0, 5), None, False, id="unknown-capacity-never-over"),
        pytest.param(Amount(8 * G, 0, 2 * G), 6 * G, False, id="room-left"),
        pytest.param(Amount(8 * G, 0, 8 * G), 0, False, id="full-is-not-over"),
        pytest.param(Amount(G, 0, 2 * G), 0, True, id="over-free-is-zero"),
        pytest.param(Amount(1.0, 0.0, 0.1 + 0.2 + 0.7), 0, False, id="float-sum-at-capacity"),
        pytest.param(Amount(1.0, 0.0, 0.3), 0.7, False, id="cpus-free-rounded"),
    ],
)
def test_free_and_over(amount: Amount, free: float | None, over: bool) -> None:
    assert (amount.free, amount.over) == (free, over)


def test_the_api_answer_and_the_units_that_reserve() -> None:
    snapshot = cluster(
        {"big.service": BIG, "idle.service": (SMALL, INACTIVE), "n.service": NOTHING},
        {M1: facts(G, "2"), M2: {}},
        {"big.service": M1, "n.service": M2},
        running=("big.service",),
    )
    found = cluster_use(snapshot)
    # every unit whose file reserves counts, placed or not, whatever its desired state
    assert found.reserving == 2
    assert found.to_dict() == {
        "machines": {
            M1: {
                "memory": {"capacity": G, "held": 0, "reserved": 2 * G, "free": 0},
                "cpus": {"capacity": 2.0, "held": 0.0, "reserved": 1.5, "free": 0.5},
                "overcommit": False,
                "overcommitted": True,
            },
            M2: {
                "memory": {"capacity": None, "held": 0, "reserved": 0, "free": None},
                "cpus": {"capacity": None, "held": 0.0, "reserved": 0.0, "free": None},
                "overcommit": False,
                "overcommitted": False,
            },
        },
        "reservingUnits": 2,
    }
    # a fleet 1.0 cluster: nothing reserves
    plain = cluster({"n.service": NOTHING}, {M1: EIGHT}, {"n.service": M1})
    assert cluster_use(plain).reserving == 0


def test_only_some_machines_and_placements_after_writes() -> None:
    snapshot = cluster(
        {"big.service": BIG, "g.service": GLOBAL_1G}, {M1: EIGHT, M2: EIGHT}, {"big.service": M1}
    )
    # one machine alone (what a fleetd's /metrics shows of itself): the same numbers
    both = cluster_use(snapshot).machines
    assert cluster_use(snapshot, only=[M2, "9" * 32]).machines == {M2: both[M2]}
    assert both[M1].memory.reserved == 3 * G and both[M2].memory.reserved == G
    # the engine moved big.service to M2: its numbers once its write is won
    moved = placed_after(snapshot.placements, [("big.service", M2), ("gone.service", None)])
    assert moved == {"big.service": M2}
    after = cluster_use(snapshot, placements=moved).machines
    assert (after[M1].memory.reserved, after[M2].memory.reserved) == (G, 3 * G)
    assert placed_after(moved, [("big.service", None)]) == {}


OVER = use((G, 0, 2 * G), (1.0, 0.0, 0.0))
OVER_MORE = use((G, 0, 3 * G), (1.0, 0.0, 0.0))
FITS = use((G, 0, G // 2), (1.0, 0.0, 0.0))


@pytest.mark.parametrize(
    ("before", "now", "over", "changes"),
    [
        pytest.param({}, {M1: FITS}, {}, [], id="fits-nothing-to-say"),
        pytest.param({}, {M1: OVER}, {M1: OVER}, [OvercommitChange(OVER, True)], id="becomes"),
        # still over-committed, even by more: said once already
        pytest.param({M1: OVER}, {M1: OVER_MORE}, {M1: OVER_MORE}, [], id="still-over"),
        pytest.param({M1: OVER}, {M1: FITS}, {}, [OvercommitChange(FITS, False)], id="stops"),
        pytest.param(
            {M1: OVER}, {}, {}, [OvercommitChange(OVER, False, gone=True)], id="machine-left"
        ),
        pytest.param(
            {M1: OVER},
            {M1: FITS, M2: use((G, 0, 2 * G), machine=M2)},
            {M2: use((G, 0, 2 * G), machine=M2)},
            [OvercommitChange(FITS, False), OvercommitChange(use((G, 0, 2 * G), machine=M2), True)],
            id="one-stops-another-becomes-by-id",
        ),
    ],
)
def test_overcommit_changes(
    before: dict[str, MachineUse],
    now: dict[str, MachineUse],
    over: dict[str, MachineUse],
    changes: list[OvercommitChange],
) -> None:
    assert overcommit_changes(before, ClusterUse(now, 1)) == (over, changes)
