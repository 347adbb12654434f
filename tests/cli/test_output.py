"""fleetctl's tables and lines against what fleet 1.0 printed, byte for byte."""

from __future__ import annotations

import pytest

from fleetd.cli.output import (
    FIELDS_MACHINES,
    FIELDS_UNIT_FILES,
    FIELDS_UNITS,
    FieldError,
    machine_full_legend,
    metadata_text,
    parse_fields,
    table,
    tabwrite,
)
from fleetd.cli.waiting import unit_state_line
from tests.cli.fleet_outputs import (
    HELLO_OPTIONS,
    IPS,
    M1,
    M2,
    M3,
    MACHINES,
    Block,
    all_blocks,
    block,
    is_table,
)

TABLES = [b for b in all_blocks() if is_table(b)]


@pytest.mark.parametrize("captured", TABLES, ids=[f"{b.file}:{b.command}" for b in TABLES])
def test_tabwriter_lays_out_every_captured_table_as_fleet(captured: Block) -> None:
    # the cells of fleet's table, re-laid out by our tabwriter, give fleet's bytes back
    rows = [[c for c in line.split("\t") if c] for line in captured.output.splitlines()]
    assert tabwrite(rows) == captured.output


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # a cell exactly 7 wide takes one tab; 8 wide takes a column of 16
        pytest.param([["1234567", "x"], ["a", "y"]], "1234567\tx\na\ty\n", id="width-7"),
        pytest.param([["12345678", "x"], ["a", "y"]], "12345678\tx\na\t\ty\n", id="width-8"),
        # the last cell is never padded
        pytest.param([["a", "b"], ["c", "long last cell"]], "a\tb\nc\tlong last cell\n", id="last"),
        pytest.param([], "", id="empty"),
        # non-ASCII counts one per character (Go counts runes)
        pytest.param([["é" * 7, "x"], ["a", "y"]], "ééééééé\tx\na\ty\n", id="runes"),
    ],
)
def test_tabwrite_rules(rows: list[list[str]], expected: str) -> None:
    assert tabwrite(rows) == expected


def test_list_machines_as_fleet() -> None:
    def show(**kw: bool) -> str:
        cols = parse_fields("machine,ip,metadata", FIELDS_MACHINES)
        rows = sorted(MACHINES, key=lambda m: m["id"])
        return table(rows, cols, FIELDS_MACHINES, ips={}, **{"full": False, "legend": True, **kw})

    assert show() == block("list-machines.txt", "list-machines").output
    assert show(full=True) == block("list-machines.txt", "list-machines --full").output
    assert show(legend=False) == block("list-machines.txt", "list-machines --no-legend").output


def test_list_machines_keeps_the_facts_in_a_column_of_their_own() -> None:
    """A machine's facts (`fleet.*` metadata) never change fleet's table; FACTS shows them."""
    rows = sorted(MACHINES, key=lambda m: m["id"])
    measured = [dict(m, metadata={**m.get("metadata", {}), "fleet.os": "debian",
                                  "fleet.cpus": "1.5"}) for m in rows[:-1]] + rows[-1:]  # fmt: skip
    cols = parse_fields("machine,ip,metadata", FIELDS_MACHINES)
    assert (
        table(measured, cols, FIELDS_MACHINES, ips={}, full=False, legend=True)
        == block("list-machines.txt", "list-machines").output
    )
    facts = table(measured, ["facts"], FIELDS_MACHINES, ips={}, full=False, legend=True)
    assert facts.splitlines() == ["FACTS", *["fleet.cpus=1.5,fleet.os=debian"] * 2, "-"]


def _state(name: str, machine: str, hash_: str, active: str = "active", sub: str = "running"):
    return {"name": name, "machineID": machine, "hash": hash_, "systemdLoadState": "loaded",
            "systemdActiveState": active, "systemdSubState": sub}  # fmt: skip


APACHE = "e084e5e3aa35dd51a8fab9f2455222a8a672c359"
GLOBAL = "27fb2afc3b737d1c9c14d92a2e7fe47f36ae104f"
STATES = [
    _state("apache@1.service", M1, APACHE),
    _state("apache@2.service", M3, APACHE),
    _state("apache@3.service", M2, APACHE),
    _state("dbonly.service", M2, "961077fd1278ba2cefcacda56315186b0acd998b"),
    _state("global.service", M1, GLOBAL),
    _state("global.service", M3, GLOBAL),
    _state("global.service", M2, GLOBAL),
    _state("hello.service", M1, "44d32a97a257f98cb98ac6dce8b13c6fa00b233d"),
    _state("sidekick.service", M1, "932c8d770fb88758722bb8835188898479070883"),
]


@pytest.mark.parametrize(
    ("file", "command", "fields", "full"),
    [
        ("fields.txt", "list-units --fields=unit,load,active,sub,machine,hash --full",
         "unit,load,active,sub,machine,hash", True),
        ("machineof.txt", "list-units --full", "unit,machine,active,sub", True),
        ("etcd-driver.txt", "--driver=etcd --endpoint=http://127.0.0.1:2379 list-units",
         "unit,machine,active,sub", False),
    ],
)  # fmt: skip
def test_list_units_as_fleet(file: str, command: str, fields: str, full: bool) -> None:
    captured = block(file, command)
    # states sorted by unit name, then machine ID, as fleet lists them
    rows = sorted(STATES, key=lambda s: (s["name"], s["machineID"]))
    cols = parse_fields(fields, FIELDS_UNITS)
    assert table(rows, cols, FIELDS_UNITS, full=full, legend=True, ips=IPS) == captured.output


def block_list(file: str) -> list[Block]:
    from tests.cli.fleet_outputs import blocks

    return blocks(file)


def _hello(desired: str, current: str, machine: str = "") -> dict:
    unit = {"name": "hello.service", "options": HELLO_OPTIONS, "desiredState": desired,
            "currentState": current}  # fmt: skip
    if machine:
        unit["machineID"] = machine
    return unit


@pytest.mark.parametrize(
    ("index", "unit", "full"),
    [
        (0, _hello("inactive", "inactive"), False),  # submitted
        (1, _hello("loaded", "loaded", M1), False),  # loaded
        (2, _hello("launched", "launched", M1), True),  # started, --full
        (4, _hello("inactive", "inactive"), False),  # unloaded
        (5, None, False),  # destroyed: only the header
    ],
)
def test_list_unit_files_as_fleet(index: int, unit: dict | None, full: bool) -> None:
    captured = block_list("list-unit-files.txt")[index]
    cols = parse_fields("unit,hash,dstate,state,target", FIELDS_UNIT_FILES)
    rows = [unit] if unit else []
    assert table(rows, cols, FIELDS_UNIT_FILES, full=full, legend=True, ips=IPS) == captured.output


def test_global_unit_files_show_global_target_and_no_state() -> None:
    unit = {"name": "global.service", "desiredState": "launched",
            "options": [{"section": "Unit", "name": "Description", "value": "Global unit"},
                        {"section": "X-Fleet", "name": "Global", "value": "true"}]}  # fmt: skip
    cells = table([unit], ["global", "state", "target", "desc"], FIELDS_UNIT_FILES,
                  full=False, legend=False, ips=IPS)  # fmt: skip
    assert cells == "true\t-\tglobal\tGlobal unit\n"


@pytest.mark.parametrize(
    ("spec", "valid", "message"),
    [
        ("unit,desc", FIELDS_UNITS, 'Invalid key in output format: "desc"'),
        ("", FIELDS_UNITS, "Must define output format"),
        ("machine,nope", FIELDS_MACHINES, 'Invalid key in output format: "nope"'),
    ],
)
def test_bad_fields_are_refused_with_fleets_message(spec, valid, message) -> None:
    with pytest.raises(FieldError) as err:
        parse_fields(spec, valid)
    assert str(err.value) == message


def test_fields_message_matches_capture() -> None:
    captured = block("fields.txt", "list-units --fields=unit,desc")
    assert captured.output == 'Invalid key in output format: "desc"\n' and captured.rc == 1


@pytest.mark.parametrize(
    ("event", "line"),
    [
        ({"name": "hello.service", "currentState": "launched", "machineID": M1,
          "machineIP": "127.0.0.11"}, "Unit hello.service launched on 5ab7f3b4.../127.0.0.11"),
        ({"name": "hello.service", "currentState": "inactive", "machineID": "",
          "machineIP": ""}, "Unit hello.service inactive"),
        ({"name": "x.service", "currentState": "loaded", "machineID": M2, "machineIP": ""},
         "Unit x.service loaded on 929c22af..."),
    ],
)  # fmt: skip
def test_unit_state_lines(event: dict, line: str) -> None:
    assert unit_state_line(event) == line


def test_captured_state_lines_are_ours() -> None:
    # every "Unit X <state> on <legend>" line fleet printed is one we print the same way
    for captured in (
        block("start.txt", "start hello.service"),
        block("load.txt", "load hello.service"),
    ):
        name, state, _, legend = captured.output.split()[1:5]
        machine = next(m for m in MACHINES if m["id"].startswith(legend[:8]))
        event = {"name": name, "currentState": state, "machineID": machine["id"],
                 "machineIP": machine["primaryIP"]}  # fmt: skip
        assert unit_state_line(event) + "\n" == captured.output


def test_metadata_and_legends() -> None:
    assert metadata_text({"role": "web", "machine": "m1"}) == "machine=m1,role=web"
    assert metadata_text({}) == "-"
    assert machine_full_legend(M1, "127.0.0.11", full=True) == f"{M1}/127.0.0.11"
    assert machine_full_legend(M1, "", full=False) == "5ab7f3b4..."
