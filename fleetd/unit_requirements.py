"""The [X-Fleet] section: what a unit asks of the machine it runs on.

fleet's option names and the legacy ones it still reads, multi-values and the specifiers it
expands, its validation messages, MachineID's short form and the globs of Conflicts/Replaces.
Pure. It reads a file's [X-Fleet] options, not the file: `fleetd.unit` sits above it, and
`UnitFile.requirements(name)` is how everyone else asks.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from fleetd.unit_names import UnitName, UnitNameError, go_quote, parse_name

__all__ = [
    "SHORT_ID_LENGTH",
    "XFLEET",
    "Requirements",
    "UnitValidationError",
    "glob_match",
    "short_id",
]

XFLEET = "X-Fleet"  # the section's name
# A machine's short ID is the first this many characters of its ID (see short_id).
SHORT_ID_LENGTH = 8
_TRUTHY = frozenset({"true", "yes", "1", "on", "t"})


class UnitValidationError(ValueError):
    """Options that parse but cannot be scheduled (fleet's ValidateOptions messages)."""


# Modern names and the legacy names fleet still reads as them.
_ALIASES: Mapping[str, str] = {
    "MachineID": "MachineID",
    "X-ConditionMachineID": "MachineID",
    "X-ConditionMachineBootID": "MachineID",
    "MachineOf": "MachineOf",
    "X-ConditionMachineOf": "MachineOf",
    "MachineMetadata": "MachineMetadata",
    "X-ConditionMachineMetadata": "MachineMetadata",
    "Conflicts": "Conflicts",
    "X-Conflicts": "Conflicts",
    "Global": "Global",
    "Replaces": "Replaces",
}
# fleet's precedence when several MachineID forms are given: the first value of the first form.
_MACHINE_ID_ORDER = ("MachineID", "X-ConditionMachineID", "X-ConditionMachineBootID")


def _multivalue(value: str) -> list[str]:
    """fleet's parseMultivalueLine: `"a=b" "c=d"` -> [a=b, c=d]; anything else is one value."""
    if not (value.startswith('"') and value.endswith('"')):
        return [value]
    values: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        elif char == " " and not quoted:
            values.append("".join(current))
            current = []
        else:
            current.append(char)
    values.append("".join(current))
    return values


def _expand(value: str, name: UnitName | None) -> str:
    """Substitute the specifiers fleet expands in [X-Fleet] values: %n %N %p %i."""
    if name is None:
        return value
    return (
        value.replace("%n", name.full)
        .replace("%N", name.name)
        .replace("%p", name.prefix)
        .replace("%i", name.instance)
    )


@dataclass(frozen=True, slots=True)
class Requirements:
    """What [X-Fleet] asks of the machine a unit runs on, specifiers already expanded."""

    machine_id: str = ""
    machine_of: tuple[str, ...] = ()
    # key -> accepted values (OR within a key, AND across keys)
    metadata: tuple[tuple[str, frozenset[str]], ...] = ()
    conflicts: tuple[str, ...] = ()
    replaces: tuple[str, ...] = ()
    is_global: bool = False
    unknown: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def of(cls, options: Iterable[tuple[str, str]], unit_name: str) -> Requirements:
        """From the (name, value) options of a file's [X-Fleet] section, in file order."""
        try:
            name: UnitName | None = parse_name(unit_name)
        except UnitNameError:
            name = None
        raw: dict[str, list[str]] = {}
        unknown: list[str] = []
        for opt_name, value in options:
            if opt_name not in _ALIASES and opt_name not in unknown:
                unknown.append(opt_name)
            raw.setdefault(opt_name, []).extend(_expand(v, name) for v in _multivalue(value))

        machine_id = next((raw[k][0] for k in _MACHINE_ID_ORDER if raw.get(k)), "")
        metadata: dict[str, set[str]] = {}
        for key in ("X-ConditionMachineMetadata", "MachineMetadata"):
            for pair in raw.get(key, ()):
                parts = pair.split("=")
                if len(parts) != 2 or not parts[0] or not parts[1]:
                    continue  # fleet ignores malformed pairs
                metadata.setdefault(parts[0], set()).add(parts[1])
        globals_ = raw.get("Global", [])
        return cls(
            machine_id=machine_id,
            machine_of=tuple(
                _dedup(raw.get("X-ConditionMachineOf", []) + raw.get("MachineOf", []))
            ),
            metadata=tuple(sorted((k, frozenset(v)) for k, v in metadata.items())),
            conflicts=tuple(_dedup(_fields(raw.get("X-Conflicts", []) + raw.get("Conflicts", [])))),
            replaces=tuple(_dedup(_fields(raw.get("Replaces", [])))),
            is_global=bool(globals_) and globals_[-1].lower() in _TRUTHY,
            unknown=tuple(unknown),
        )

    def validate(self) -> None:
        """Raise UnitValidationError (fleet's messages) for combinations that cannot hold."""
        for peer in self.machine_of:
            for conflict in self.conflicts:
                if glob_match(conflict, peer):
                    raise UnitValidationError(
                        f"unresolvable requirements: peer {go_quote(peer)} "
                        f"matches conflict {go_quote(conflict)}"
                    )
            for replace in self.replaces:
                if glob_match(replace, peer):
                    raise UnitValidationError(
                        f"unresolvable requirements: peer {go_quote(peer)} "
                        f"matches replace {go_quote(replace)}"
                    )
        rules = (
            (self.machine_id and self.machine_of, "MachineID cannot be used with Peers"),
            (self.machine_id and self.conflicts, "MachineID cannot be used with Conflicts"),
            (self.machine_id and self.is_global, "MachineID cannot be used with Global"),
            (self.machine_id and self.replaces, "MachineID cannot be used with Replaces"),
            (self.is_global and self.machine_of, "Global cannot be used with Peers"),
            (self.is_global and self.replaces, "Global cannot be used with Replaces"),
            (self.conflicts and self.replaces, "Conflicts cannot be used with Replaces"),
        )
        for broken, message in rules:
            if broken:
                raise UnitValidationError(message)

    @property
    def metadata_dict(self) -> dict[str, frozenset[str]]:
        return dict(self.metadata)

    def metadata_matches(self, machine_metadata: Mapping[str, str]) -> bool:
        """Every required key present with one of its accepted values."""
        return all(machine_metadata.get(key) in values for key, values in self.metadata)

    def machine_id_matches(self, machine_id: str) -> bool:
        """MachineID names the full ID or its 8-character short form (as fleet matches)."""
        if not self.machine_id:
            return True
        return machine_id == self.machine_id or (
            len(self.machine_id) == SHORT_ID_LENGTH and short_id(machine_id) == self.machine_id
        )

    def conflicts_with(self, other_name: str) -> bool:
        return any(glob_match(pattern, other_name) for pattern in self.conflicts)

    def replaces_unit(self, other_name: str) -> bool:
        return any(glob_match(pattern, other_name) for pattern in self.replaces)


def short_id(machine_id: str) -> str:
    """A machine ID's short form (`5ab7f3b4`): what fleetctl and fleetd's messages show, and
    what `MachineID=` accepts besides the full ID. Defined here, next to the MachineID rule,
    since the unit model is the lowest layer; `fleetd.model` re-exports it for everyone else."""
    return machine_id[:SHORT_ID_LENGTH]


def _fields(values: Iterable[str]) -> list[str]:
    return [part for value in values for part in value.split()]


def _dedup(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def glob_match(pattern: str, name: str) -> bool:
    """Go's path.Match, which fleet uses for Conflicts and Replaces.

    `*` any run of characters but `/`, `?` one such character, `[...]` a class (`[^...]`
    negates, ranges with `-`), `\\` escapes. A malformed pattern matches nothing (Go returns an
    error there, and fleet treats it as no match).
    """
    if not any(c in pattern for c in "*?[\\"):
        return pattern == name
    regex = _glob_regex(pattern)
    return regex is not None and regex.fullmatch(name) is not None


@functools.lru_cache(maxsize=1024)
def _glob_regex(pattern: str) -> re.Pattern[str] | None:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\":
            if i >= n:
                return None
            out.append(re.escape(pattern[i]))
            i += 1
        elif c == "[":
            negate = i < n and pattern[i] == "^"
            i += negate
            ranges: list[str] = []
            while True:
                if i >= n:
                    return None  # unterminated class
                if pattern[i] == "]" and ranges:
                    i += 1
                    break
                lo, i = _class_char(pattern, i)
                if lo is None:
                    return None
                hi = lo
                if i < n and pattern[i] == "-":
                    hi, i = _class_char(pattern, i + 1)
                    if hi is None or hi < lo:
                        return None
                ranges.append(re.escape(lo) + ("-" + re.escape(hi) if hi != lo else ""))
            out.append(("[^/" if negate else "[") + "".join(ranges) + "]")
        else:
            out.append(re.escape(c))
    return re.compile("".join(out), re.DOTALL)


def _class_char(pattern: str, i: int) -> tuple[str | None, int]:
    if i >= len(pattern) or pattern[i] in "-]":
        return None, i
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            return None, i
    return pattern[i], i + 1
