"""`fleetctl set-metadata` / `unset-metadata`: which arguments are refused before the API is
asked anything, which machine a prefix names, the PATCH operations sent and the lines printed.
The real command against a real API and etcd: tests/cli/test_metadata.py; on real machines:
tests/e2e/test_metadata.py."""

from __future__ import annotations

import pytest

from fleetd.reconcile.remote import machine_by_prefix
from fleetd.reconcile.set_metadata import (
    MetadataArgs,
    MetadataPlan,
    plan_metadata,
    read_set_args,
    read_unset_args,
)
from fleetd.reconcile.submit import Line

# fleet's capture IDs: 5ab7f3b4 and 929c22af; a third sharing 5ab7's first 4 characters
M1 = "5ab7f3b47ecc47a0a777884d749db537"
M2 = "929c22af894a4c82b6a758451e974da7"
M3 = "5ab7000000000000000000000000beef"
MACHINES = {M1: {"role": "web", "machine": "m1"}, M2: {"role": "db"}, M3: {}}

UNABLE = "Unable to proceed: "
KEY_CHARS = "may hold only letters, digits, '_', '.' and '-'"
RESERVED = "is reserved: keys beginning with 'fleet.' are machine facts measured by fleetd"


@pytest.mark.parametrize(
    ("args", "why"),
    [
        # a machine and at least one pair
        pytest.param([], "one machine and at least one key=value must be provided", id="nothing"),
        pytest.param(["5ab7f3b4"], "one machine and at least one key=value must be provided", id="no-pair"),
        pytest.param(["", "role=web"], "the machine must be a machine ID or a unique prefix of one", id="empty-machine"),
        # each pair key=value, with a key and a value
        pytest.param(["m", "role"], "metadata 'role' is not key=value (unset-metadata removes a key)", id="no-equals"),
        pytest.param(["m", "role="], "metadata 'role=' has no value (unset-metadata removes a key)", id="empty-value"),
        pytest.param(["m", "=web"], "metadata '=web' has no key", id="no-key"),
        # the key: fleet's characters ([A-Za-z0-9_.-]+), not fleetd's reserved prefix
        pytest.param(["m", "ro le=web"], f"metadata key 'ro le' {KEY_CHARS}", id="blank-in-key"),
        pytest.param(["m", "a/b=web"], f"metadata key 'a/b' {KEY_CHARS}", id="slash-in-key"),
        pytest.param(["m", "rôle=web"], f"metadata key 'rôle' {KEY_CHARS}", id="non-ascii-key"),
        pytest.param(["m", "fleet.cpus=4"], f"metadata key 'fleet.cpus' {RESERVED}", id="reserved"),
        pytest.param(["m", "fleet.=4"], f"metadata key 'fleet.' {RESERVED}", id="reserved-bare"),
        pytest.param(["m", "role=web", "role=db"], "metadata key 'role' is given twice", id="twice"),
        # the value: what the configuration's metadata (k=v,k2=v2) can hold, values split by |
        pytest.param(["m", "role=a,b"], "metadata value 'a,b' of key 'role' may not hold ',' (it separates pairs; several values are written a|b)", id="comma"),
        pytest.param(["m", "role=a\nb"], "metadata value 'a\\nb' of key 'role' may not hold control characters", id="newline"),
        pytest.param(["m", "role= web"], "metadata value ' web' of key 'role' may not begin or end a value with whitespace", id="leading-blank"),
        pytest.param(["m", "disk=ssd |nvme"], "metadata value 'ssd |nvme' of key 'disk' may not begin or end a value with whitespace", id="blank-before-bar"),
        pytest.param(["m", "disk=ssd||nvme"], "metadata value 'ssd||nvme' of key 'disk' has an empty value (several values are written a|b)", id="empty-alternative"),
        pytest.param(["m", "disk=|"], "metadata value '|' of key 'disk' has an empty value (several values are written a|b)", id="only-bar"),
        # the first bad pair refuses the command, whatever good pairs come before it
        pytest.param(["m", "zone=1", "fleet.x=1"], f"metadata key 'fleet.x' {RESERVED}", id="second-bad"),
    ],
)  # fmt: skip
def test_bad_set_arguments_are_refused_before_anything_is_asked(args: list[str], why: str) -> None:
    assert read_set_args(args) == MetadataArgs(refusal=UNABLE + why)
    # and the plan carries the refusal whatever the machines
    assert plan_metadata(read_set_args(args), MACHINES) == MetadataPlan(refusal=UNABLE + why)


@pytest.mark.parametrize(
    ("args", "why"),
    [
        pytest.param([], "one machine and at least one key must be provided", id="nothing"),
        pytest.param(["5ab7f3b4"], "one machine and at least one key must be provided", id="no-key"),
        pytest.param(["", "role"], "the machine must be a machine ID or a unique prefix of one", id="empty-machine"),
        pytest.param(["m", "role=web"], "unset-metadata takes keys, not key=value: 'role=web'", id="pair"),
        pytest.param(["m", "role="], "unset-metadata takes keys, not key=value: 'role='", id="pair-empty"),
        pytest.param(["m", ""], f"metadata key '' {KEY_CHARS}", id="empty-key"),
        pytest.param(["m", "a b"], f"metadata key 'a b' {KEY_CHARS}", id="blank-in-key"),
        pytest.param(["m", "fleet.cpus"], f"metadata key 'fleet.cpus' {RESERVED}", id="reserved"),
        pytest.param(["m", "role", "role"], "metadata key 'role' is given twice", id="twice"),
    ],
)  # fmt: skip
def test_bad_unset_arguments_are_refused_before_anything_is_asked(
    args: list[str], why: str
) -> None:
    assert read_unset_args(args) == MetadataArgs(refusal=UNABLE + why)


@pytest.mark.parametrize(
    ("args", "changes"),
    [
        pytest.param(["5ab7", "role=web"], (("role", "web"),), id="one"),
        # argument order kept; `|` separates several values of one key (machine metadata's way)
        pytest.param(["5ab7", "zone=eu", "disk=ssd|nvme"], (("zone", "eu"), ("disk", "ssd|nvme")), id="multi-value"),
        # the value is everything after the first '='; inner blanks as the configuration allows
        pytest.param(["5ab7", "expr=a=b"], (("expr", "a=b"),), id="equals-in-value"),
        pytest.param(["5ab7", "site=rack 4"], (("site", "rack 4"),), id="inner-blank"),
        # keys: letters, digits, _ . - (and "fleet" alone or inside a key is no reserved prefix)
        pytest.param(["5ab7", "zone_1.a-B=x", "fleet=x", "my.fleet.x=y"], (("zone_1.a-B", "x"), ("fleet", "x"), ("my.fleet.x", "y")), id="key-characters"),
    ],
)  # fmt: skip
def test_good_set_arguments(args: list[str], changes: tuple[tuple[str, str], ...]) -> None:
    assert read_set_args(args) == MetadataArgs(args[0], changes)


def test_unset_arguments_are_keys_with_empty_values() -> None:
    assert read_unset_args(["929c", "role", "zone"]) == MetadataArgs(
        "929c", (("role", ""), ("zone", ""))
    )


def add(mid: str, key: str, value: str) -> dict:
    return {"op": "add", "path": f"/{mid}/metadata/{key}", "value": {"value": value}}


def remove(mid: str, key: str) -> dict:
    return {"op": "remove", "path": f"/{mid}/metadata/{key}"}


@pytest.mark.parametrize(
    ("args", "plan"),
    [
        # a unique prefix names one machine; its short ID is what the line shows
        pytest.param(read_set_args(["929c", "role=web"]),
                     MetadataPlan(M2, (add(M2, "role", "web"),), (Line("Set metadata of 929c22af: role=web"),)),
                     id="set-by-prefix"),
        # a full ID names its machine even when it is also a prefix (of nothing longer here)
        pytest.param(read_set_args([M1, "disk=ssd|nvme", "zone=eu"]),
                     MetadataPlan(M1, (add(M1, "disk", "ssd|nvme"), add(M1, "zone", "eu")),
                                  (Line("Set metadata of 5ab7f3b4: disk=ssd|nvme,zone=eu"),)),
                     id="set-several-by-full-id"),
        # setting the value a machine already has is sent anyway: it becomes dynamic metadata
        # (it outlives a change of the machine's configuration)
        pytest.param(read_set_args(["5ab7f", "role=web"]),
                     MetadataPlan(M1, (add(M1, "role", "web"),), (Line("Set metadata of 5ab7f3b4: role=web"),)),
                     id="set-same-value"),
        # unset a key the machine has (configured or set): removed, i.e. hidden
        pytest.param(read_unset_args(["5ab7f", "role", "machine"]),
                     MetadataPlan(M1, (remove(M1, "role"), remove(M1, "machine")),
                                  (Line("Unset metadata of 5ab7f3b4: role,machine"),)),
                     id="unset"),
        # a key it does not have: nothing sent for it, a note on stderr (not an error)
        pytest.param(read_unset_args(["929c", "zone", "role"]),
                     MetadataPlan(M2, (remove(M2, "role"),),
                                  (Line("Unset metadata of 929c22af: role"),
                                   Line("Machine 929c22af has no metadata 'zone': nothing to unset", True))),
                     id="unset-some-absent"),
        pytest.param(read_unset_args(["5ab70", "role"]),
                     MetadataPlan(M3, (), (Line("Machine 5ab70000 has no metadata 'role': nothing to unset", True),)),
                     id="unset-nothing-to-do"),
    ],
)  # fmt: skip
def test_plan(args: MetadataArgs, plan: MetadataPlan) -> None:
    assert plan_metadata(args, MACHINES) == plan


@pytest.mark.parametrize(
    ("machine", "why"),
    [
        # fleet's words (ssh -m), then which prefix and which machines
        pytest.param("5ab7", f"found more than one machine (the IDs of {M3}, {M1} start with '5ab7')", id="ambiguous"),
        pytest.param("c0ffee", "machine does not exist (no machine ID starts with 'c0ffee')", id="unknown"),
        pytest.param(M1 + "0", f"machine does not exist (no machine ID starts with '{M1}0')", id="longer-than-an-id"),
        pytest.param("5AB7F3B4", "machine does not exist (no machine ID starts with '5AB7F3B4')", id="case-matters"),
    ],
)  # fmt: skip
def test_a_machine_named_by_no_or_several_ids_is_refused(machine: str, why: str) -> None:
    for args in (read_set_args([machine, "role=web"]), read_unset_args([machine, "role"])):
        assert plan_metadata(args, MACHINES) == MetadataPlan(refusal=UNABLE + why)


def test_no_machine_at_all() -> None:
    plan = plan_metadata(read_set_args(["5ab7", "role=web"]), {})
    assert plan.refusal == UNABLE + "machine does not exist (no machine ID starts with '5ab7')"


@pytest.mark.parametrize(
    ("ids", "prefix", "found"),
    [
        pytest.param([M1, M2], "9", (M2, ""), id="unique-prefix"),
        pytest.param([M1, M2], M1, (M1, ""), id="full-id"),
        # a full ID wins over a longer ID it is a prefix of (IDs of other lengths)
        pytest.param(["abc", "abcd"], "abc", ("abc", ""), id="exact-before-prefix"),
        pytest.param([M1, M3], "5ab7", (None, "found more than one machine"), id="several"),
        pytest.param([M1], "x", (None, "machine does not exist"), id="none"),
    ],
)  # fmt: skip
def test_machine_by_prefix(ids: list[str], prefix: str, found: tuple[str | None, str]) -> None:
    assert machine_by_prefix(ids, prefix) == found
