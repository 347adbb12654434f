"""`fleetctl why`, and unplaced units in list-unit-files and list-units: the real fleetctl (a
subprocess) against a real API server, registry, etcd and engine (tests/cli/conftest.py)."""

from __future__ import annotations

import json

from fleetd.cli.output import tabwrite
from fleetd.unit import parse_unit
from tests.cli.conftest import M1, M2, Cluster
from tests.cli.fleet_outputs import HELLO_TEXT

HELLO_HASH = "44d32a97a257f98cb98ac6dce8b13c6fa00b233d"
NOT_EU = HELLO_TEXT + "\n[X-Fleet]\nMachineMetadata=region!=eu\n"
EU = HELLO_TEXT + "\n[X-Fleet]\nMachineMetadata=region=eu\n"
M1_LEGEND, M2_LEGEND = "5ab7f3b4.../127.0.0.11", "929c22af.../127.0.0.12"
REASON = "no machine matches MachineMetadata region!=eu"


async def test_why_and_the_lists_show_what_keeps_a_unit_off_every_machine(
    cluster: Cluster,
) -> None:
    run = cluster.fleetctl
    # two machines in eu, the third without a region: none is `region!=eu`
    await cluster.registry.set_machine_metadata({M1: {"region": "eu"}, M2: {"region": "eu"}})
    (cluster.workdir / "web.service").write_text(NOT_EU)
    (cluster.workdir / "eu.service").write_text(EU)
    for args in (("start", "hello"), ("start", "eu"), ("start", "--no-block", "web")):
        rc, _, err = await run(*args)
        assert rc == 0, (args, err)

    rc, out, err = await run("why", "web")
    assert (rc, err) == (0, "")
    assert out.splitlines() == [
        "Unit web.service is not placed on any machine.",
        f"Reason: {REASON}",
        "Desired state: launched (current: inactive)",
        "Rules over the 3 machines of the cluster:",
        "  MachineMetadata region!=eu: 3 of 3 machines rejected "
        "(5ab7f3b4: region=eu, 8197e13c: no region, 929c22af: region=eu)",
        "Feasible machines now: 0 of 3",
    ]
    rc, out, _ = await run("why", "--output", "json", "web.service")
    doc = json.loads(out)
    assert rc == 0 and doc["kind"] == "unplaced" and doc["reason"] == REASON
    assert [(r["rule"], r["rejected"], r["machines"]) for r in doc["rejections"]] == [
        ("MachineMetadata region!=eu", 3, 3)
    ]

    # a placed unit: its machine (M1 runs hello, so the least loaded eu machine is M2)
    rc, out, err = await run("why", "eu.service")
    assert (rc, err) == (0, "")
    assert out.splitlines() == [
        f"Unit eu.service is placed on {M2_LEGEND}.",
        "Desired state: launched (current: launched)",
        "Rules on 929c22af:",
        "  MachineMetadata region=eu: holds (region=eu)",
        "Feasible machines now: 2 of 3",
        "Ranking: least loaded first, ties by machine ID: 0 other units there "
        "(the feasible machines have 0 to 1)",
    ]

    # list-unit-files: fleet's table; with -l/--full a REASON column for the unplaced unit
    eu_hash, web_hash = parse_unit(EU).hash, parse_unit(NOT_EU).hash
    rows = [
        ["eu.service", eu_hash, "launched", "launched", M2_LEGEND],
        ["hello.service", HELLO_HASH, "launched", "launched", M1_LEGEND],
        ["web.service", web_hash, "launched", "inactive", "-"],
    ]
    short = [[r[0], r[1][:7], *r[2:]] for r in rows]
    rc, out, err = await run("list-unit-files")
    assert (rc, out, err) == (
        0,
        tabwrite([["UNIT", "HASH", "DSTATE", "STATE", "TARGET"], *short]),
        "",
    )
    full = [[*r[:4], r[4].replace("5ab7f3b4...", M1).replace("929c22af...", M2)] for r in rows]
    expected = tabwrite([
        ["UNIT", "HASH", "DSTATE", "STATE", "TARGET", "REASON"],
        *[[*r, REASON if r[0] == "web.service" else "-"] for r in full],
    ])  # fmt: skip
    for flag in ("-l", "--full"):
        assert await run("list-unit-files", flag) == (0, expected, "")
    rc, out, _ = await run("list-unit-files", "--no-legend", "--fields", "unit,reason")
    assert out == tabwrite([["eu.service", "-"], ["hello.service", "-"], ["web.service", REASON]])
    rc, out, _ = await run("list-unit-files", "--output", "json")
    assert {r["unit"]: r["reason"] for r in json.loads(out)} == {
        "eu.service": "-", "hello.service": "-", "web.service": REASON
    }  # fmt: skip

    # list-units: fleet's table (the unit has no machine, so no row), and a line on stderr
    table = tabwrite([
        ["UNIT", "MACHINE", "ACTIVE", "SUB"],
        ["eu.service", M2_LEGEND, "active", "running"],
        ["hello.service", M1_LEGEND, "active", "running"],
    ])  # fmt: skip
    assert await run("list-units") == (
        0,
        table,
        "1 unit is not placed on any machine: web.service (see fleetctl why UNIT)\n",
    )
    rc, out, err = await run("list-units", "--no-legend")
    assert (rc, err) == (0, "") and out == table.split("\n", 1)[1]

    # once a machine qualifies, the engine places it and the lists are fleet's again
    await cluster.registry.set_machine_metadata({M2: {"region": "us"}})
    rc, out, err = await run("start", "web.service")  # waits for it to be launched
    assert rc == 0, err
    rc, out, err = await run("list-units")
    assert (rc, err) == (0, "") and "web.service" in out
    rc, out, _ = await run("list-unit-files", "-l")
    assert rc == 0 and "REASON" not in out


async def test_why_errors(cluster: Cluster) -> None:
    run = cluster.fleetctl
    assert await run("why", "nosuch") == (1, "", "Unit nosuch.service does not exist.\n")
    assert await run("why", "bad name") == (
        1, "", "Error: invalid character ' ' in unit name\n"
    )  # fmt: skip
    assert await run("why") == (1, "", "One unit must be provided\n")
    rc, out, err = await run("--endpoint", f"unix://{cluster.workdir}/nobody.sock", "why", "a")
    assert rc == 1 and out == "" and len(err.splitlines()) == 1
    assert "nobody.sock" in err and "is fleetd running?" in err
