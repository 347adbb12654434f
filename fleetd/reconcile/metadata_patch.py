"""What `PATCH /fleet/v1/machines` (fleet's `api/machines.go`) changes, decided without I/O.

fleet takes a JSON-patch-like list of operations on machines' metadata,
`[{"op": "add"|"replace"|"remove", "path": "/<machine-id>/metadata/<key>", "value": ...}]`,
and refuses the whole list, in its words, at the first bad operation: nothing is written
unless every operation is good. The operations become one change of the dynamic metadata per
machine, which the handler writes in one registry call.

What a metadata key may be is said here once, for the API and for `fleetctl set-metadata`
(`reconcile/set_metadata.py`): fleet's characters, and not fleetd's reserved `fleet.` prefix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from fleetd.reconcile.refuse import Refuse
from fleetd.rules.metadata import KEY, KEY_CHARACTERS, RESERVED_PREFIX, is_key, reserved_key

__all__ = [
    "KEY_CHARACTERS",
    "RESERVED_PREFIX",
    "MetadataChange",
    "is_key",
    "plan_patch",
    "read_patch",
    "reserved_key",
]

# fleet's own pattern (metadataPathRegex): a machine ID, then a metadata key
_PATH = re.compile(rf"^/([^/]+)/metadata/({KEY.pattern})$")


@dataclass(frozen=True, slots=True)
class MetadataChange:
    """One operation: set a metadata key of a machine, or remove it (value "", as the registry
    stores a removal: it must hide a key the machine's configuration sets)."""

    machine_id: str
    key: str
    value: str


def read_patch(body: object) -> list[MetadataChange] | Refuse:
    """The operations of fleet's PATCH body, in order, or fleet's 400 for the first bad one.

    The value is fleet's `{"value": v}`; a flat string `value` (as fleet's documentation shows
    it, and as scripts written from it send) is accepted too.
    """
    if not isinstance(body, list):
        return Refuse(400, "unable to decode body: expected a JSON array of operations")
    changes = []
    for op in body:
        if not isinstance(op, Mapping):
            return Refuse(400, "unable to decode body: each operation must be a JSON object")
        kind = op.get("op")
        if kind not in ("add", "remove", "replace"):
            return Refuse(400, "invalid op: expect add, remove, or replace")
        path = op.get("path")
        match = _PATH.match(path) if isinstance(path, str) else None
        if match is None:
            return Refuse(400, "machine metadata path invalid")
        if why := reserved_key(match.group(2)):
            return Refuse(400, why)
        value = op.get("value")
        if isinstance(value, Mapping):
            value = value.get("value")
        if kind == "remove":
            value = ""  # whatever it brings: a removal has no value
        elif not isinstance(value, str) or not value:
            return Refuse(400, "invalid value: add and replace require a value")
        changes.append(MetadataChange(match.group(1), match.group(2), value))
    return changes


def plan_patch(body: object) -> dict[str, dict[str, str]] | Refuse:
    """The dynamic metadata to write, by machine ID then key ("" removes the key), or fleet's
    refusal. Operations apply in order, so a later one on the same key wins, as it would had
    they been applied one by one."""
    changes = read_patch(body)
    if isinstance(changes, Refuse):
        return changes
    by_machine: dict[str, dict[str, str]] = {}
    for change in changes:
        by_machine.setdefault(change.machine_id, {})[change.key] = change.value
    return by_machine
