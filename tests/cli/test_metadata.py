"""`fleetctl set-metadata` / `unset-metadata`: the real fleetctl (a subprocess) against a real
API server, registry, etcd and engine (tests/cli/conftest.py); what they change is read back
with `list-machines` and from etcd. Real machines reacting to it: tests/e2e/test_metadata.py."""

from __future__ import annotations

import json

import pytest

from fleetd.model import Machine
from fleetd.registry import Snapshot
from tests.cli.conftest import M1, M2, M3, Cluster
from tests.waiting import until

UNABLE = "Unable to proceed: "


async def metadata_shown(cluster: Cluster) -> dict[str, str]:
    """What `list-machines --full --fields machine,metadata` shows, by machine ID."""
    rc, out, err = await cluster.fleetctl(
        "list-machines", "--full", "--output", "json", "--fields", "machine,metadata"
    )
    assert (rc, err) == (0, "")
    return {row["machine"]: row["metadata"] for row in json.loads(out)}


async def meta_revision(cluster: Cluster, machine_id: str) -> int:
    """The revision of the last write of the machine's dynamic metadata (the session's etcd is
    shared: its global revision moves with other tests' leases expiring)."""
    registry = cluster.registry
    _, kv = await registry.etcd.get(registry.keys.machine_meta(machine_id))
    assert kv is not None
    return kv.mod_revision


async def test_set_then_unset_shows_in_list_machines(cluster: Cluster) -> None:
    # M3 is configured with machine=m3, role=misc: a set value overrides the configured one,
    # a new key joins them, `|` gives a key several values
    rc, out, err = await cluster.fleetctl("set-metadata", "8197", "role=web", "disk=ssd|nvme")
    assert (rc, out, err) == (0, "Set metadata of 8197e13c: role=web,disk=ssd|nvme\n", "")
    shown = await metadata_shown(cluster)
    assert shown[M3] == "disk=ssd|nvme,machine=m3,role=web"
    assert shown[M1] == "machine=m1,role=web" and shown[M2] == "machine=m2,role=db"  # untouched
    # the table too (fleet's layout, abbreviated IDs)
    rc, out, _ = await cluster.fleetctl("list-machines", "--no-legend")
    assert "8197e13c...\t127.0.0.13\tdisk=ssd|nvme,machine=m3,role=web\n" in out

    # unset: a set key is gone, and so is a configured one (hidden, as PATCH remove)
    rc, out, err = await cluster.fleetctl("unset-metadata", M3, "disk", "machine")
    assert (rc, out, err) == (0, "Unset metadata of 8197e13c: disk,machine\n", "")
    assert (await metadata_shown(cluster))[M3] == "role=web"
    snapshot = await cluster.registry.snapshot()
    assert snapshot.dynamic_metadata[M3] == {"role": "web", "disk": "", "machine": ""}

    # a key the machine does not have: nothing to do, said on stderr, exit 0, nothing written
    written = await meta_revision(cluster, M3)
    rc, out, err = await cluster.fleetctl("unset-metadata", M3, "zone")
    assert (rc, out, err) == (0, "", "Machine 8197e13c has no metadata 'zone': nothing to unset\n")
    after = await cluster.registry.snapshot()
    assert after.dynamic_metadata == snapshot.dynamic_metadata
    assert await meta_revision(cluster, M3) == written  # not even rewritten as it was

    # and the last key with it: the machine shows no metadata ("-" in the table)
    rc, out, err = await cluster.fleetctl("unset-metadata", "8", "role", "zone")
    assert (rc, out) == (0, "Unset metadata of 8197e13c: role\n")
    assert err == "Machine 8197e13c has no metadata 'zone': nothing to unset\n"
    rc, out, _ = await cluster.fleetctl("list-machines", "--no-legend")
    assert "8197e13c...\t127.0.0.13\t-\n" in out


async def test_set_metadata_places_a_waiting_unit(cluster: Cluster) -> None:
    """The engine reads what the command set: a unit no machine matched is placed."""
    (cluster.workdir / "ssd.service").write_text(
        "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nMachineMetadata=disk=ssd\n"
    )
    assert (await cluster.fleetctl("start", "--no-block", "ssd.service"))[0] == 0
    rc, out, err = await cluster.fleetctl("set-metadata", "929c22af", "disk=ssd")
    assert (rc, out, err) == (0, "Set metadata of 929c22af: disk=ssd\n", "")

    def placed_on_m2(snapshot: Snapshot) -> bool:
        return snapshot.placements.get("ssd.service") == M2

    await until(cluster.registry, placed_on_m2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # arguments: refused before the API is asked anything
        pytest.param(["set-metadata", M1, "ro le=web"], "metadata key 'ro le' may hold only letters, digits, '_', '.' and '-'", id="bad-key"),
        pytest.param(["set-metadata", M1, "fleet.cpus=4"], "metadata key 'fleet.cpus' is reserved: keys beginning with 'fleet.' are machine facts measured by fleetd", id="reserved-set"),
        pytest.param(["unset-metadata", M1, "fleet.cpus"], "metadata key 'fleet.cpus' is reserved: keys beginning with 'fleet.' are machine facts measured by fleetd", id="reserved-unset"),
        pytest.param(["set-metadata", M1, "role"], "metadata 'role' is not key=value (unset-metadata removes a key)", id="no-equals"),
        pytest.param(["set-metadata", M1, "role="], "metadata 'role=' has no value (unset-metadata removes a key)", id="no-value"),
        pytest.param(["unset-metadata", M1, "role=web"], "unset-metadata takes keys, not key=value: 'role=web'", id="unset-pair"),
        pytest.param(["set-metadata", M1], "one machine and at least one key=value must be provided", id="no-pair"),
        pytest.param(["unset-metadata"], "one machine and at least one key must be provided", id="nothing"),
        # a good first pair is not sent when a later one is bad
        pytest.param(["set-metadata", M1, "zone=eu", "fleet.x=1"], "metadata key 'fleet.x' is reserved: keys beginning with 'fleet.' are machine facts measured by fleetd", id="second-bad"),
        # the machine: a full ID or a unique prefix of one among the live machines
        pytest.param(["set-metadata", "c0ffee", "role=web"], "machine does not exist (no machine ID starts with 'c0ffee')", id="unknown-machine"),
        pytest.param(["unset-metadata", "c0ffee", "role"], "machine does not exist (no machine ID starts with 'c0ffee')", id="unset-unknown-machine"),
        pytest.param(["set-metadata", "5ab7", "role=db"], f"found more than one machine (the IDs of {M1}, 5ab7ffff{'0' * 24} start with '5ab7')", id="ambiguous-machine"),
    ],
)  # fmt: skip
async def test_errors_exit_1_and_write_nothing(
    cluster: Cluster, args: list[str], message: str
) -> None:
    # a fourth machine whose ID shares M1's first characters
    lease = await cluster.registry.register_machine(
        Machine("5ab7ffff" + "0" * 24, "127.0.0.14", {}), 30
    )
    try:
        before = await cluster.registry.snapshot()
        rc, out, err = await cluster.fleetctl(*args)
        assert (rc, out, err) == (1, "", UNABLE + message + "\n")
        after = await cluster.registry.snapshot()
        # nothing written: the commands write only dynamic metadata (etcd's global revision is
        # no witness: the session's etcd is shared, other tests' leases expire meanwhile)
        assert after.dynamic_metadata == before.dynamic_metadata == {}
    finally:
        await lease.revoke()


async def test_api_unreachable_is_one_line(cluster: Cluster) -> None:
    rc, out, err = await cluster.fleetctl(
        "--endpoint", f"unix://{cluster.workdir}/nobody.sock", "set-metadata", M1, "role=db"
    )
    assert rc == 1 and out == "" and len(err.splitlines()) == 1
    assert err.startswith("Error: cannot reach the fleet API at unix://")
