"""`PATCH /machines`: fleet's operations on machines' metadata, its refusals, and the change
of dynamic metadata per machine they make together."""

from __future__ import annotations

import pytest

from fleetd.reconcile.metadata_patch import MetadataChange, plan_patch, read_patch
from fleetd.reconcile.refuse import Refuse

M1, M2 = "1" * 32, "2" * 32
RESERVED = (
    "metadata key '{}' is reserved: keys beginning with 'fleet.' are machine facts measured by "
    "fleetd"
)


def op(kind: str = "add", path: str = f"/{M1}/metadata/role", value: object = None) -> dict:
    out: dict[str, object] = {"op": kind, "path": path}
    if value is not None:
        out["value"] = value
    return out


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({"op": "add"}, "unable to decode body: expected a JSON array of operations", id="object"),
        pytest.param(["add"], "unable to decode body: each operation must be a JSON object", id="string-op"),
        # JSON patch's other ops mean nothing for a flat key/value map
        pytest.param([op("move", value={"value": "db"})], "invalid op: expect add, remove, or replace", id="move"),
        pytest.param([op("ADD", value={"value": "db"})], "invalid op: expect add, remove, or replace", id="op-case"),
        pytest.param([{"path": f"/{M1}/metadata/role", "value": "db"}], "invalid op: expect add, remove, or replace", id="no-op"),
        # the path names one key of one machine's metadata, and nothing else
        pytest.param([op(path=f"/{M1}/metadata", value="db")], "machine metadata path invalid", id="no-key"),
        pytest.param([op(path=f"/{M1}/labels/role", value="db")], "machine metadata path invalid", id="not-metadata"),
        pytest.param([op(path=f"{M1}/metadata/role", value="db")], "machine metadata path invalid", id="relative"),
        pytest.param([op(path=f"/{M1}/metadata/ro le", value="db")], "machine metadata path invalid", id="blank-in-key"),
        pytest.param([op(path=f"/{M1}/metadata/a/b", value="db")], "machine metadata path invalid", id="slash-in-key"),
        pytest.param([{"op": "add", "path": 7, "value": "db"}], "machine metadata path invalid", id="path-number"),
        # add and replace need a value; an empty one would be a removal in disguise
        pytest.param([op()], "invalid value: add and replace require a value", id="no-value"),
        pytest.param([op(value="")], "invalid value: add and replace require a value", id="empty"),
        pytest.param([op("replace", value={"value": ""})], "invalid value: add and replace require a value", id="empty-object"),
        pytest.param([op(value={"value": 3})], "invalid value: add and replace require a value", id="number"),
        pytest.param([op(value={"other": "db"})], "invalid value: add and replace require a value", id="object-without-value"),
        # keys beginning with "fleet." are machine facts fleetd measures: no op may touch them
        pytest.param([op(path=f"/{M1}/metadata/fleet.cpus", value="4")], RESERVED.format("fleet.cpus"), id="reserved-add"),
        pytest.param([op("remove", path=f"/{M1}/metadata/fleet.cpus")], RESERVED.format("fleet.cpus"), id="reserved-remove"),
        pytest.param([op(value="db"), op(path=f"/{M1}/metadata/fleet.", value="x")], RESERVED.format("fleet."), id="reserved-after-good"),
        # one bad operation refuses the whole list, however many good ones come first
        pytest.param([op(value="db"), op("move")], "invalid op: expect add, remove, or replace", id="second-bad"),
    ],
)  # fmt: skip
def test_a_bad_operation_refuses_the_whole_patch(body: object, message: str) -> None:
    assert read_patch(body) == Refuse(400, message)
    assert plan_patch(body) == Refuse(400, message)


@pytest.mark.parametrize(
    ("operation", "change"),
    [
        # fleet's shape, and the flat string fleet's documentation shows
        pytest.param(op(value={"value": "db"}), MetadataChange(M1, "role", "db"), id="fleet-shape"),
        pytest.param(op(value="db"), MetadataChange(M1, "role", "db"), id="flat-string"),
        pytest.param(op("replace", value="web"), MetadataChange(M1, "role", "web"), id="replace"),
        # a removal is stored as "": it must also hide a key the machine's config sets
        pytest.param(op("remove"), MetadataChange(M1, "role", ""), id="remove"),
        pytest.param(op("remove", value="db"), MetadataChange(M1, "role", ""), id="remove-ignores-value"),
        pytest.param(op(path=f"/{M1}/metadata/zone_1.a-b", value="x"), MetadataChange(M1, "zone_1.a-b", "x"), id="key-characters"),
        # only the prefix is reserved: "fleet" as a key, or inside one, is a key like any other
        pytest.param(op(path=f"/{M1}/metadata/fleet", value="x"), MetadataChange(M1, "fleet", "x"), id="fleet-alone"),
        pytest.param(op(path=f"/{M1}/metadata/my.fleet.x", value="x"), MetadataChange(M1, "my.fleet.x", "x"), id="fleet-inside"),
        # several values of one key, separated by | (machine metadata's multi-value syntax)
        pytest.param(op(path=f"/{M1}/metadata/disk", value="ssd|nvme"), MetadataChange(M1, "disk", "ssd|nvme"), id="multi-value"),
    ],
)  # fmt: skip
def test_an_operation_sets_or_removes_one_key(operation: dict, change: MetadataChange) -> None:
    assert read_patch([operation]) == [change]


def test_operations_apply_in_order_per_machine() -> None:
    body = [
        op(value="db"),
        op(path=f"/{M2}/metadata/role", value="web"),
        op(path=f"/{M1}/metadata/disk", value="ssd"),
        op("remove"),  # the later operation on M1's role wins: removed
        op("remove", path=f"/{M2}/metadata/zone"),
    ]
    assert plan_patch(body) == {
        M1: {"role": "", "disk": "ssd"},
        M2: {"role": "web", "zone": ""},
    }


def test_an_empty_patch_changes_nothing() -> None:
    assert plan_patch([]) == {}
