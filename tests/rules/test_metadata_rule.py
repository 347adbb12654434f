"""MachineMetadata with operators: parsing, refusals at submit, matching, and fleet 1.0's
meaning kept for every pair fleet accepted (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetd.reconcile.engine import plan_engine
from fleetd.reconcile.globals import globals_on
from fleetd.reconcile.scheduler import MachineSpec
from fleetd.rules import Requirements, UnitValidationError
from fleetd.rules.metadata import MachineMetadata
from tests.rules.helpers import applied, job, jobs_of, req


def term(lines: str) -> MachineMetadata:
    found = req(lines).term("MachineMetadata")
    assert isinstance(found, MachineMetadata)
    return found


@pytest.mark.parametrize(
    ("lines", "reads"),
    [
        ("MachineMetadata=region=us", "region=us"),
        ("MachineMetadata=region!=eu", "region!=eu"),
        ("MachineMetadata=cores>=8", "cores>=8"),
        ("MachineMetadata=cores>8", "cores>8"),
        ("MachineMetadata=cores<=8", "cores<=8"),
        ("MachineMetadata=cores<8", "cores<8"),
        ("MachineMetadata=mem>=1.5", "mem>=1.5"),
        ("MachineMetadata=temp>-4", "temp>-4"),
        ("MachineMetadata=host=~web[0-9]+", "host=~web[0-9]+"),
        ("MachineMetadata=cores >= 8", "cores>=8"),  # spaces around a comparison
        # the same key: equalities are alternatives, other clauses all hold, in file order
        ("MachineMetadata=role=web\nMachineMetadata=role=db", "role=db|web"),
        ("MachineMetadata=cores>=8\nMachineMetadata=cores<=16", "cores>=8 cores<=16"),
        ('MachineMetadata="role=web" "role!=db" "dc=a"', "dc=a role=web role!=db"),
        # legacy name first, as fleet reads it
        ("X-ConditionMachineMetadata=a=1\nMachineMetadata=b>2", "a=1 b>2"),
        # fleet's reading of what is not a clause: one "=" with text on both sides
        ("MachineMetadata=my key=v", "my key=v"),
        ("MachineMetadata=a=>5", "a=>5"),
        ("MachineMetadata=a!==b", "a!==b"),
        # specifiers
        ("MachineMetadata=rack!=%i", "rack!=7"),
    ],
)
def test_clauses_read(lines: str, reads: str) -> None:
    assert str(req(lines, "x@7.service").term("MachineMetadata")) == f"MachineMetadata {reads}"


@pytest.mark.parametrize(
    "lines",
    [
        "MachineMetadata=novalue",
        "MachineMetadata=a=b=c",
        "MachineMetadata==x",
        "MachineMetadata=k=",
    ],
)
def test_pairs_fleet_ignored_are_still_ignored(lines: str) -> None:
    r = req(lines)
    assert r.term("MachineMetadata") is None
    r.validate()


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            "MachineMetadata=cores>=abc",
            "MachineMetadata cores>=abc: 'abc' is not a number (>= compares numbers)",
        ),
        (
            "MachineMetadata=cores<8GB",
            "MachineMetadata cores<8GB: '8GB' is not a number (< compares numbers)",
        ),
        ("MachineMetadata=cores>=", "MachineMetadata cores>=: no value after '>='"),
        ("MachineMetadata=region!=", "MachineMetadata region!=: no value after '!='"),
        (
            "MachineMetadata=host=~web[",
            "MachineMetadata host=~web[: invalid regular expression: unterminated character "
            "set at position 3",
        ),
        (
            'MachineMetadata="a=1" "b>x"',
            "MachineMetadata b>x: 'x' is not a number (> compares numbers)",
        ),
    ],
)
def test_bad_comparisons_are_refused_with_the_option_and_the_reason(
    lines: str, message: str
) -> None:
    r = req(lines)
    with pytest.raises(UnitValidationError) as err:
        r.validate()
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("lines", "machine", "ok"),
    [
        ("MachineMetadata=region=us", {"region": "us"}, True),
        ("MachineMetadata=region=us", {"region": "eu"}, False),
        ("MachineMetadata=region!=eu", {"region": "us"}, True),
        ("MachineMetadata=region!=eu", {"region": "eu"}, False),
        ("MachineMetadata=region!=eu", {}, False),  # no key: no match
        ("MachineMetadata=cores>=8", {"cores": "8"}, True),
        ("MachineMetadata=cores>=8", {"cores": "16"}, True),  # numbers, not text ("16" < "8")
        ("MachineMetadata=cores>=8", {"cores": "4"}, False),
        ("MachineMetadata=cores>=8", {"cores": "many"}, False),  # not a number: no match
        ("MachineMetadata=cores>=8", {}, False),
        ("MachineMetadata=cores>8", {"cores": "8"}, False),
        ("MachineMetadata=cores<8", {"cores": "7.5"}, True),
        ("MachineMetadata=cores<=8", {"cores": "8.0"}, True),
        ("MachineMetadata=temp>-4", {"temp": "-3"}, True),
        ("MachineMetadata=host=~web[0-9]+", {"host": "web12"}, True),
        ("MachineMetadata=host=~web[0-9]+", {"host": "web12x"}, False),  # whole value
        ("MachineMetadata=host=~web[0-9]+", {"host": "xweb1"}, False),
        ("MachineMetadata=host=~web[0-9]+", {}, False),
        # ranges and exclusions on one key
        ("MachineMetadata=cores>=8\nMachineMetadata=cores<=16", {"cores": "12"}, True),
        ("MachineMetadata=cores>=8\nMachineMetadata=cores<=16", {"cores": "32"}, False),
        ("MachineMetadata=dc!=eu\nMachineMetadata=dc!=ap", {"dc": "ap"}, False),
        ("MachineMetadata=dc!=eu\nMachineMetadata=dc!=ap", {"dc": "us"}, True),
        # alternatives and an exclusion on one key, another key besides
        ('MachineMetadata="role=web" "role=db" "cores>=4"', {"role": "db", "cores": "4"}, True),
        ('MachineMetadata="role=web" "role=db" "cores>=4"', {"role": "db", "cores": "2"}, False),
        # several values of one machine's key
        ("MachineMetadata=disk=ssd", {"disk": "ssd|nvme"}, True),
        ("MachineMetadata=disk=nvme", {"disk": "ssd|nvme"}, True),
        ("MachineMetadata=disk=hdd", {"disk": "ssd|nvme"}, False),
        ("MachineMetadata=disk!=hdd", {"disk": "ssd|nvme"}, True),
        ("MachineMetadata=disk!=ssd", {"disk": "ssd|nvme"}, False),  # none may be the value
        ("MachineMetadata=gpus>=2", {"gpus": "1|4"}, True),
        ("MachineMetadata=disk=~nv.*", {"disk": "ssd|nvme"}, True),
        # sizes as systemd reads them (base 1024), on either side
        ("MachineMetadata=fleet.memory>=8G", {"fleet.memory": str(8 << 30)}, True),
        ("MachineMetadata=fleet.memory>=8G", {"fleet.memory": str((8 << 30) - 1)}, False),
        ("MachineMetadata=mem>512M", {"mem": "1G"}, True),
        ("MachineMetadata=mem<1.5T", {"mem": "1536G"}, False),
        ("MachineMetadata=mem<=1K", {"mem": "1024B"}, True),
        ("MachineMetadata=mem>=1G", {"mem": "1GB"}, False),  # not a number: no match
    ],
)
def test_matching(lines: str, machine: dict[str, str], ok: bool) -> None:
    assert term(lines).admits(machine) is ok


def test_a_refusal_names_the_broken_clause_and_the_machines_value() -> None:
    plan = plan_engine(
        jobs_of(job("a.service", "MachineMetadata=region!=eu\nMachineMetadata=cores>=8")),
        [MachineSpec("1" * 32, {"region": "eu", "cores": "16"}), MachineSpec("2" * 32, {})],
        {},
    )
    assert plan.unplaced == {"a.service": "no machine matches MachineMetadata cores>=8 region!=eu"}


def test_a_placed_unit_whose_clause_stops_holding_moves() -> None:
    jobs = jobs_of(job("a.service", "MachineMetadata=cores>=8"))
    m1, m2 = "1" * 32, "2" * 32
    before = {"a.service": m1}
    plan = plan_engine(
        jobs, [MachineSpec(m1, {"cores": "4"}), MachineSpec(m2, {"cores": "8"})], before
    )
    assert applied(plan, before) == {"a.service": m2}


def test_global_units_obey_the_operators_on_each_machine() -> None:
    candidates = {"g.service": req("Global=true\nMachineMetadata=cores>=8\nMachineMetadata=dc!=eu")}
    assert globals_on({"cores": "16", "dc": "us"}, candidates) == ["g.service"]
    assert globals_on({"cores": "16", "dc": "eu"}, candidates) == []
    assert globals_on({"cores": "4", "dc": "us"}, candidates) == []
    assert globals_on({"cores": "16"}, candidates) == []


# ---- properties

KEYS = st.text("abcdefghijklmnopqrstuvwxyzABC0123456789_.-", min_size=1, max_size=6)
# a value fleet 1.0 reads as one: no "=", and (the one documented exception) not starting "~"
FLEET_VALUES = st.text(min_size=1, max_size=6).filter(lambda v: "=" not in v and v[0] != "~")
MACHINE_VALUES = st.text(min_size=0, max_size=6).filter(lambda v: "|" not in v)


def fleet_matches(pairs: list[str], machine: dict[str, str]) -> bool:
    """fleet 1.0: split each pair on "=" (exactly two non-empty parts, else ignored); the
    values of one key are alternatives, every key must match."""
    wanted: dict[str, set[str]] = {}
    for pair in pairs:
        parts = pair.split("=")
        if len(parts) == 2 and parts[0] and parts[1]:
            wanted.setdefault(parts[0], set()).add(parts[1])
    return all(machine.get(k) in v for k, v in wanted.items())


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.tuples(KEYS, FLEET_VALUES).map("=".join), max_size=5),
    st.dictionaries(KEYS, MACHINE_VALUES, max_size=5),
    st.booleans(),
)
def test_every_fleet_pair_selects_the_machines_fleet_selected(
    pairs: list[str], machine: dict[str, str], quoted: bool
) -> None:
    if quoted and pairs and all(" " not in p and '"' not in p for p in pairs):
        options = [("MachineMetadata", " ".join(f'"{p}"' for p in pairs))]  # one quoted line
    else:
        options = [("MachineMetadata", p) for p in pairs]
    r = Requirements.of(options, "u.service")
    r.validate()
    found = r.term("MachineMetadata")
    admits = found is None or (isinstance(found, MachineMetadata) and found.admits(machine))
    assert admits is fleet_matches(pairs, machine)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.text(max_size=12).filter(lambda s: "\n" not in s and "\r" not in s), max_size=4),
    st.dictionaries(st.text(max_size=6), st.text(max_size=8), max_size=4),
)
def test_never_raises_on_arbitrary_clauses_and_metadata(
    pairs: list[str], machine: dict[str, str]
) -> None:
    r = Requirements.of([("MachineMetadata", p) for p in pairs], "u.service")
    found = r.term("MachineMetadata")
    if isinstance(found, MachineMetadata):
        assert found.admits(machine) in (True, False)
    try:
        r.validate()
    except UnitValidationError as err:
        assert str(err).startswith("MachineMetadata ")
