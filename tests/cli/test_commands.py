"""The real fleetctl (a subprocess) against a real API server, registry, etcd and engine.

Outputs are compared byte for byte with what fleet 1.0 printed (tests/cli/fleet_outputs): the
cluster uses the captures' machine IDs and IPs and their hello.service, so nothing needs
normalising. Machines' agents are stood in for (see conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from fleetd.model import UnitState
from tests.cli.conftest import M1, M2, M3, Cluster
from tests.cli.fleet_outputs import block, blocks


def captured(file: str, command: str, index: int = 0) -> tuple[int, str]:
    b = block(file, command, index)
    return b.rc, b.output


async def test_walkthrough_hello_as_fleet(cluster: Cluster) -> None:
    run = cluster.fleetctl
    lists = blocks("list-unit-files.txt")
    units = blocks("list-units.txt")

    rc, out, err = await run("submit", "hello.service")
    assert (rc, out + err) == captured("submit.txt", "submit hello.service")
    rc, out, err = await run("list-unit-files")
    assert (rc, out, err) == (0, lists[0].output, "")
    rc, out, err = await run("cat", "hello")  # `hello` means hello.service
    assert (rc, out) == captured("cat.txt", "cat hello.service")

    rc, out, err = await run("load", "hello.service")
    assert (rc, out + err) == captured("load.txt", "load hello.service")
    assert (await run("list-unit-files"))[1] == lists[1].output
    assert (await run("list-units"))[1] == units[0].output

    rc, out, err = await run("start", "hello")
    assert (rc, out + err) == captured("start.txt", "start hello.service")
    assert (await run("list-unit-files", "--full"))[1] == lists[2].output
    assert (await run("list-units"))[1] == units[1].output
    assert (await run("list-units", "--full"))[1] == units[2].output
    assert (await run("list-units", "-l"))[1] == units[2].output

    rc, out, err = await run("status", "hello")
    assert (
        rc == 0 and out.startswith("● hello.service - Hello World\n") and "active (running)" in out
    )
    rc, out, err = await run("journal", "--lines", "3", "hello")
    assert rc == 0 and out.splitlines() == [
        f"Nov 25 11:36:0{i} vm sh[8548]: Hello World" for i in (2, 3, 4)
    ]

    rc, out, err = await run("stop", "hello")
    assert (rc, out + err) == captured("stop.txt", "stop hello.service")
    assert (await run("list-unit-files"))[1] == lists[3].output
    rc, out, err = await run("unload", "hello")
    assert (rc, out + err) == captured("unload.txt", "unload hello.service")
    assert (await run("list-unit-files"))[1] == lists[4].output

    rc, out, err = await run("destroy", "hello")
    assert (rc, out + err) == captured("destroy.txt", "destroy hello.service")
    assert (await run("list-unit-files"))[1] == lists[5].output
    assert (await run("list-units"))[1] == units[6].output


async def test_templates_three_symlinked_instances_by_one_glob(cluster: Cluster) -> None:
    # the walkthrough's layout: templates/apache@.service, instances/apache@{5555,6666,7777}
    work = cluster.workdir
    (work / "templates").mkdir()
    (work / "instances").mkdir()
    os.rename(work / "apache@.service", work / "templates" / "apache@.service")
    for port in (5555, 6666, 7777):
        os.symlink("../templates/apache@.service", work / "instances" / f"apache@{port}.service")
    instances = sorted(str(p.relative_to(work)) for p in (work / "instances").iterdir())

    rc, out, err = await cluster.fleetctl("start", *instances)  # what `instances/*` expands to
    assert rc == 0, err
    lines = out.splitlines()
    assert sorted(lines[:3]) == [f"Unit apache@{p}.service inactive" for p in (5555, 6666, 7777)]
    launched = sorted(lines[3:])
    assert len(launched) == 3 and all(" launched on " in line for line in launched)

    rc, out, _ = await cluster.fleetctl(
        "list-units", "--no-legend", "--full", "--fields", "unit,machine"
    )
    machines = {line.split("\t")[-1].split("/")[0] for line in out.splitlines()}
    assert machines == {M1, M2, M3}  # X-Conflicts=apache@*.service: one per machine

    # a 4th instance cannot be placed: fleet's timeout lines, with the scheduler's reason
    os.symlink("../templates/apache@.service", work / "instances" / "apache@8888.service")
    rc, out, err = await cluster.fleetctl(
        "start", "--block-attempts=1", "instances/apache@8888.service"
    )
    assert rc == 1
    assert out == "Unit apache@8888.service inactive\n"
    first, *_, last = err.splitlines()
    assert first.startswith(
        "Error waiting for units: timed out waiting for unit apache@8888.service to report state launched"
    )
    assert last.startswith("Error waiting for unit states, exit status: timed out waiting for unit")

    # an instance created from the template already in the registry (no local file)
    rc, out, err = await cluster.fleetctl("submit", "templates/apache@.service")
    rc, out, err = await cluster.fleetctl("submit", "apache@80.service")
    assert (rc, out) == (0, "Unit apache@80.service inactive\n"), err
    rc, out, _ = await cluster.fleetctl("list-unit-files", "--no-legend", "--fields", "unit,dstate")
    assert "apache@.service\tinactive" in out.replace("\t\t", "\t")


async def test_json_output_carries_the_tables_data(cluster: Cluster) -> None:
    assert (await cluster.fleetctl("start", "hello"))[0] == 0
    for command in ("list-units", "list-unit-files", "list-machines"):
        rc, table, _ = await cluster.fleetctl(command, "--no-legend")
        rc2, doc, _ = await cluster.fleetctl(command, "--output", "json")
        assert rc == rc2 == 0
        rows = json.loads(doc)
        as_table = [[c for c in line.split("\t") if c] for line in table.splitlines()]
        if command == "list-machines":  # json adds the facts (none here) to the default fields
            assert [r.pop("facts") for r in rows] == ["-"] * 3
        assert [list(r.values()) for r in rows] == as_table, command
    rc, doc, _ = await cluster.fleetctl("list-machines", "--output", "json", "--full")
    assert [r["machine"] for r in json.loads(doc)] == sorted([M1, M2, M3])
    rc, doc, _ = await cluster.fleetctl("cat", "--output", "json", "hello")
    assert json.loads(doc)["name"] == "hello.service"


async def test_error_cases(cluster: Cluster, tmp_path_factory) -> None:
    run = cluster.fleetctl
    # unknown unit: fleet's messages
    rc, out, err = await run("start", "nosuch.service")
    fleet_rc, fleet_line = captured("errors.txt", "start nosuch.service")
    assert (
        (rc, out + err)
        == (  # fleet's message, then the path looked at
            fleet_rc,
            f"{fleet_line[:-1]} (looked for file {cluster.workdir}/nosuch.service)\n",
        )
    )
    rc, out, err = await run("cat", "nosuch.service")
    assert (rc, out + err) == captured("errors.txt", "cat nosuch.service")
    rc, out, err = await run("destroy", "nosuch.service")
    assert (rc, out + err) == captured("errors.txt", "destroy nosuch.service")
    rc, out, err = await run("status", "nosuch.service")
    assert (rc, out + err) == captured("errors.txt", "status nosuch.service")
    # missing file / template: more in test_errors.py
    rc, out, err = await run("submit", "missing")
    assert (rc, err) == (
        1,
        "Error creating units: unable to find Unit(missing.service) in Registry or on filesystem"
        f" (looked for file {cluster.workdir}/missing.service)\n",
    )
    # bad name
    rc, out, err = await run("submit", "bad name.service")
    assert (rc, err) == (1, "Error creating units: invalid character ' ' in unit name\n")
    # no units given: a usage error (fleet exited 0)
    rc, out, err = await run("stop")
    assert (rc, err) == (1, "No units given\n")
    # changed file resubmitted: fleet's warning, no change; --replace replaces it
    assert (await run("submit", "hello.service"))[0] == 0
    (cluster.workdir / "hello.service").write_text("[Service]\nExecStart=/bin/true\n")
    rc, out, err = await run("submit", "hello.service")
    assert (rc, out, err) == (
        0,
        "",
        "WARNING: Unit hello.service in registry differs from local unit file hello.service. Add --replace to override.\n",
    )
    # unknown [X-Fleet] key: a warning, not fatal
    (cluster.workdir / "odd.service").write_text(
        "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nFoo=bar\n"
    )
    rc, out, err = await run("submit", "odd.service")
    assert rc == 0 and 'unrecognized requirement in [X-Fleet] section: "Foo"' in err
    # bad --fields
    rc, out, err = await run("list-units", "--fields=unit,desc")
    assert (rc, out + err) == captured("fields.txt", "list-units --fields=unit,desc")
    rc, out, err = await run("list-unit-files", "--fields=unit,tmachine")
    assert err == 'WARNING: The "tmachine" field is deprecated. Use "target" instead\n'


async def test_bad_endpoint_is_one_line_naming_it(cluster: Cluster) -> None:
    sock = cluster.workdir / "nobody.sock"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleetd.cli", "--endpoint", f"unix://{sock}", "list-units",
        env=cluster.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 1 and out == b""
    assert len(err.splitlines()) == 1 and str(sock).encode() in err
    # FLEETCTL_ENDPOINT is honoured (fleet's TestFleetctlWithEnv)
    env = {**cluster.env, "FLEETCTL_ENDPOINT": cluster.endpoint}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleetd.cli", "list-machines", "--no-legend",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert (
        proc.returncode == 0
        and out.decode() == block("list-machines.txt", "list-machines --no-legend").output
    )


async def test_journal_follow_until_ctrl_c_exits_0(cluster: Cluster) -> None:
    assert (await cluster.fleetctl("start", "hello"))[0] == 0
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleetd.cli", "--endpoint", cluster.endpoint, "journal", "-f", "hello",
        env=cluster.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    seen = []
    while len(seen) < 5:
        seen.append(await asyncio.wait_for(proc.stdout.readline(), 30))
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    assert seen[-1] == b"Nov 25 11:36:04 vm sh[8548]: Hello World\n"


async def test_replace_updates_a_unit_in_place(cluster: Cluster) -> None:
    run = cluster.fleetctl
    assert (await run("start", "hello.service"))[0] == 0
    (cluster.workdir / "hello.service").write_text("[Service]\nExecStart=/bin/true\n")
    rc, out, err = await run("submit", "--replace", "hello.service")
    # submit may replace only inactive units (fleet's checkReplaceUnitState)
    assert (rc, err) == (
        0, "Warning: can not replace Unit(hello.service) in state 'launched', use the appropriate command\n"
    )  # fmt: skip
    rc, out, err = await run("load", "--replace", "hello.service")
    assert (rc, err) == (
        0, "Warning: can not replace Unit(hello.service) in state 'launched', use the appropriate command\n"
    )  # fmt: skip
    rc, out, err = await run("start", "--replace", "hello.service")
    assert rc == 0, err
    assert out.startswith("Unit hello.service launched on ")  # waited for again
    assert (await run("cat", "hello"))[1] == "[Service]\nExecStart=/bin/true\n"
    snap = await cluster.registry.snapshot()
    assert snap.jobs["hello.service"].desired == "launched"
    assert len(snap.units) == 1  # the old content had no other user
    rc, out, err = await run("start", "--replace", "hello.service")
    assert (rc, out) == (0, "Found same Unit(hello.service) in Registry, nothing to do\n")
    # submit --replace of an inactive unit, and load --replace of a loaded one
    (cluster.workdir / "other.service").write_text("[Service]\nExecStart=/bin/true\n")
    assert (await run("submit", "other.service"))[0] == 0
    (cluster.workdir / "other.service").write_text("[Service]\nExecStart=/bin/false\n")
    rc, out, err = await run("submit", "--replace", "other.service")
    assert (rc, err) == (0, "")
    assert (await run("cat", "other"))[1] == "[Service]\nExecStart=/bin/false\n"
    assert (await run("load", "other.service"))[0] == 0
    (cluster.workdir / "other.service").write_text("[Service]\nExecStart=/bin/sleep 1\n")
    rc, out, err = await run("load", "--replace", "other.service")
    assert (rc, err) == (0, "")
    assert out.startswith("Unit other.service loaded on ")
    assert (await run("cat", "other"))[1] == "[Service]\nExecStart=/bin/sleep 1\n"


async def test_journal_of_a_global_unit_needs_a_machine(cluster: Cluster) -> None:
    run = cluster.fleetctl
    (cluster.workdir / "g.service").write_text(
        "[Service]\nExecStart=/bin/sleep infinity\n\n[X-Fleet]\nGlobal=true\n"
    )
    assert (await run("start", "g.service"))[0] == 0
    # what the agents of M1 and M2 would publish for the global unit
    unit_hash = (await cluster.registry.get_job("g.service")).unit_hash
    lease = await cluster.registry.grant_lease(30)
    for mid in (M1, M2):
        state = UnitState("g.service", mid, unit_hash, "loaded", "active", "running")
        await cluster.registry.publish_state(state, lease)
    try:
        # fleet's error when no machine is named
        assert await run("journal", "g.service") == (
            1, "", "Unable to retrieve journal of global unit g.service.\n"
        )  # fmt: skip
        # -m/--machine (beyond fleet): a full ID, or a unique prefix as `ssh -m`
        for flag in (["--machine", M1], ["-m", M1[:8]]):
            rc, out, err = await run("journal", "--lines", "2", *flag, "g")
            assert (rc, err) == (0, ""), err
            assert out.splitlines() == [
                f"Nov 25 11:36:0{i} vm sh[8548]: Hello World" for i in (3, 4)
            ]
        # a machine that does not run it
        rc, out, err = await run("journal", "-m", M3, "g.service")
        assert (rc, err) == (1, f"Unit g.service does not appear to be running on {M3}.\n")
    finally:
        await lease.revoke()
