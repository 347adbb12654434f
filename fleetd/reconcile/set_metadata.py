"""What `fleetctl set-metadata MACHINE key=value...` and `fleetctl unset-metadata MACHINE
key...` do, decided without I/O.

The arguments are read first (`read_set_args`, `read_unset_args`): a bad one refuses the
command before anything is asked of the API. Then, given the live machines and their
effective metadata (`GET /machines`), `plan_metadata` picks the machine (a full ID or a unique
prefix of one, as `ssh -m` and `journal --machine`), says which operations of fleet's `PATCH
/machines` to send and what to print. A value may hold several values separated by `|`
(`disk=ssd|nvme`), machine metadata's way of giving a key more than one value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fleetd.model import short_id
from fleetd.reconcile.metadata_patch import KEY_CHARACTERS, is_key, reserved_key
from fleetd.reconcile.remote import NO_MACHINE, machine_by_prefix
from fleetd.reconcile.submit import Line

__all__ = [
    "MetadataArgs",
    "MetadataPlan",
    "plan_metadata",
    "read_set_args",
    "read_unset_args",
]

UNABLE = "Unable to proceed: "
MULTI_VALUE = "|"  # `disk=ssd|nvme`: the machine has both values of `disk`


@dataclass(frozen=True)
class MetadataArgs:
    """The arguments read: the machine as given and, in order, each key with its new value
    ("" to unset it); or why they are refused (then nothing is asked or sent)."""

    machine: str = ""
    changes: tuple[tuple[str, str], ...] = ()
    refusal: str = ""


@dataclass(frozen=True)
class MetadataPlan:
    """The machine's full ID, the `PATCH /machines` body (none: nothing to send) and the lines
    to print once it is sent; or why the command is refused (nothing is sent)."""

    machine_id: str = ""
    operations: tuple[dict[str, Any], ...] = ()
    lines: tuple[Line, ...] = ()
    refusal: str = ""


def read_set_args(args: Sequence[str]) -> MetadataArgs:
    """`set-metadata MACHINE key=value...`: each pair a key of fleet's characters, not
    reserved, given once, with a value (its `|`-separated values each non-empty, none holding
    `,`, control characters or surrounding whitespace)."""
    if len(args) < 2:
        return MetadataArgs(
            refusal=UNABLE + "one machine and at least one key=value must be provided"
        )
    changes: list[tuple[str, str]] = []
    for pair in args[1:]:
        key, sep, value = pair.partition("=")
        if not sep:
            why = f"metadata {pair!r} is not key=value (unset-metadata removes a key)"
        elif not key:
            why = f"metadata {pair!r} has no key"
        elif not value:
            why = f"metadata {pair!r} has no value (unset-metadata removes a key)"
        else:
            why = _key_problem(key, changes) or _value_problem(key, value)
        if why:
            return MetadataArgs(refusal=UNABLE + why)
        changes.append((key, value))
    return _with_machine(args[0], changes)


def read_unset_args(args: Sequence[str]) -> MetadataArgs:
    """`unset-metadata MACHINE key...`: each a bare key of fleet's characters, not reserved,
    given once."""
    if len(args) < 2:
        return MetadataArgs(refusal=UNABLE + "one machine and at least one key must be provided")
    changes: list[tuple[str, str]] = []
    for key in args[1:]:
        if "=" in key:
            why = f"unset-metadata takes keys, not key=value: {key!r}"
        else:
            why = _key_problem(key, changes)
        if why:
            return MetadataArgs(refusal=UNABLE + why)
        changes.append((key, ""))
    return _with_machine(args[0], changes)


def _with_machine(machine: str, changes: list[tuple[str, str]]) -> MetadataArgs:
    if not machine:  # an empty prefix would name the machine of a one-machine cluster
        return MetadataArgs(
            refusal=UNABLE + "the machine must be a machine ID or a unique prefix of one"
        )
    return MetadataArgs(machine, tuple(changes))


def _key_problem(key: str, earlier: Sequence[tuple[str, str]]) -> str:
    if not is_key(key):
        return f"metadata key {key!r} may hold only {KEY_CHARACTERS}"
    if why := reserved_key(key):
        return why
    if any(key == k for k, _ in earlier):
        return f"metadata key {key!r} is given twice"
    return ""


def _value_problem(key: str, value: str) -> str:
    where = f"metadata value {value!r} of key {key!r}"
    if "," in value:
        return f"{where} may not hold ',' (it separates pairs; several values are written a|b)"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return f"{where} may not hold control characters"
    for one in value.split(MULTI_VALUE):
        if not one:
            return f"{where} has an empty value (several values are written a|b)"
        if one != one.strip():
            return f"{where} may not begin or end a value with whitespace"
    return ""


def plan_metadata(args: MetadataArgs, machines: Mapping[str, Mapping[str, str]]) -> MetadataPlan:
    """What the command does given the live machines (ID → effective metadata, as `GET
    /machines` shows them). A key to unset that the machine does not have is no error: the
    state asked for holds already, nothing is sent for it and a note says so on stderr."""
    if args.refusal:
        return MetadataPlan(refusal=args.refusal)
    machine_id, why = machine_by_prefix(machines, args.machine)
    if machine_id is None:
        return MetadataPlan(refusal=UNABLE + _no_machine(why, args.machine, machines))
    short = short_id(machine_id)
    have = machines[machine_id]
    operations: list[dict[str, Any]] = []
    shown: list[str] = []
    notes: list[Line] = []
    for key, value in args.changes:
        path = f"/{machine_id}/metadata/{key}"
        if value:
            operations.append({"op": "add", "path": path, "value": {"value": value}})
            shown.append(f"{key}={value}")
        elif key in have:
            operations.append({"op": "remove", "path": path})
            shown.append(key)
        else:
            notes.append(Line(f"Machine {short} has no metadata {key!r}: nothing to unset", True))
    lines = list(notes)
    if shown:
        verb = "Set" if args.changes[0][1] else "Unset"
        lines.insert(0, Line(f"{verb} metadata of {short}: {','.join(shown)}"))
    return MetadataPlan(machine_id, tuple(operations), tuple(lines))


def _no_machine(why: str, prefix: str, machines: Mapping[str, object]) -> str:
    if why == NO_MACHINE:
        return f"{why} (no machine ID starts with {prefix!r})"
    matches = sorted(m for m in machines if m.startswith(prefix))
    return f"{why} (the IDs of {', '.join(matches)} start with {prefix!r})"
