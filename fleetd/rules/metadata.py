"""`MachineMetadata=` (legacy `X-ConditionMachineMetadata=`): what the machine's metadata must say.

A clause is `key OP value`:

- `key=value`: it has the key with this value (fleet 1.0's only form, same meaning);
- `key!=value`: it has the key, and not with this value (a machine without the key does not
  match);
- `key>=n`, `key>n`, `key<=n`, `key<n`: it has the key with a number that compares so (`n`
  must be a number: anything else is refused at submit; a machine whose value is not a number
  does not match). Numbers may carry a size suffix, base 1024 as systemd reads `MemoryMax=`:
  `512M`, `8G`, `1.5T` (`B` is bytes), on either side;
- `key=~regex`: it has the key with a value the regular expression (Python `re`) matches whole.

Several clauses (on several lines, or quoted on one: `"a=1" "b=2"`), as in fleet: `=` clauses of
one key are alternatives (any of them), everything else must hold (every key, every other
clause) — so `cores>=8` and `cores<=16` make a range, `region!=eu` and `region!=ap` exclude both.

A machine's value may hold several values separated by `|` (`disk=ssd|nvme`): a clause holds
when it holds for one of them (`!=`: none of them is the value).

A pair that is not a clause keeps fleet's reading: exactly one `=` with text on both sides is an
equality (whatever the key holds), anything else is ignored. The one fleet-1.0 pair that reads
differently now is a value beginning with `~` (`key=~x`, now a regular expression).
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from fleetd.rules.base import (
    Options,
    Placing,
    Rejection,
    RejectReason,
    Rule,
    Standing,
    Term,
    UnitValidationError,
)
from fleetd.rules.sizes import number
from fleetd.unit_names import UnitName

__all__ = [
    "KEY",
    "KEY_CHARACTERS",
    "RESERVED_PREFIX",
    "RULE",
    "Clause",
    "MachineMetadata",
    "Op",
    "is_key",
    "reserved_key",
    "values_of",
]

# A metadata key: fleet's characters (its API's metadataPathRegex), the same in fleet.conf,
# fleetctl set-metadata, PATCH /machines and the rules.
KEY = re.compile(r"[A-Za-z0-9_.-]+")
KEY_CHARACTERS = "letters, digits, '_', '.' and '-'"
# Keys under it are facts fleetd measures about a machine: nobody sets or removes them by hand.
RESERVED_PREFIX = "fleet."
_CLAUSE = re.compile(rf"({KEY.pattern})\s*(!=|>=|<=|=~|>|<)\s*(.*)", re.DOTALL)
SEPARATOR = "|"  # between the several values of one machine's key


class Op(StrEnum):
    EQ = "="
    NE = "!="
    GE = ">="
    GT = ">"
    LE = "<="
    LT = "<"
    RE = "=~"


_COMPARE: Mapping[Op, Callable[[float, float], bool]] = {
    Op.GE: operator.ge, Op.GT: operator.gt, Op.LE: operator.le, Op.LT: operator.lt,
}  # fmt: skip


def is_key(key: str) -> bool:
    """Whether `key` is made of fleet's metadata key characters (and not empty)."""
    return KEY.fullmatch(key) is not None


def reserved_key(key: str) -> str:
    """Why `key` may not be set or removed by hand ("" when it may)."""
    if key.startswith(RESERVED_PREFIX):
        return (
            f"metadata key {key!r} is reserved: keys beginning with {RESERVED_PREFIX!r} are "
            "machine facts measured by fleetd"
        )
    return ""


@functools.lru_cache(maxsize=4096)
def values_of(raw: str) -> tuple[str, ...]:
    """The values one machine's metadata value holds (`ssd|nvme` -> ssd, nvme)."""
    return tuple(raw.split(SEPARATOR)) if SEPARATOR in raw else (raw,)


@functools.lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@dataclass(frozen=True, slots=True)
class Clause:
    """One comparison other than `=` (equalities are kept as sets of accepted values)."""

    key: str
    op: Op
    value: str

    def holds(self, values: tuple[str, ...]) -> bool:
        """Whether the machine's `values` of the key (at least one) satisfy the clause."""
        if self.op is Op.NE:
            return self.value not in values
        if self.op is Op.RE:
            regex = _regex(self.value)
            return any(regex.fullmatch(v) for v in values)
        wanted, compare = number(self.value), _COMPARE[self.op]
        assert wanted is not None  # read_clause refused any other
        return any((n := number(v)) is not None and compare(n, wanted) for v in values)

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value}"


@dataclass(frozen=True, slots=True)
class Need:
    """What one key must satisfy: one of `equal` (if any), and every clause of `others`."""

    key: str
    equal: frozenset[str]
    others: tuple[Clause, ...]

    def failing(self, raw: str | None) -> str | None:
        """The part of this need a machine's value `raw` (None: no such key) breaks, or None."""
        if raw is None:
            return str(self)
        values = values_of(raw)
        if self.equal and not any(v in self.equal for v in values):
            return self._equality()
        return next((str(c) for c in self.others if not c.holds(values)), None)

    def _equality(self) -> str:
        return f"{self.key}={SEPARATOR.join(sorted(self.equal))}"

    def __str__(self) -> str:
        parts = [self._equality()] if self.equal else []
        return " ".join([*parts, *map(str, self.others)])


@dataclass(frozen=True, slots=True)
class Broken:
    """The subject of a metadata refusal: the part of the rule broken, and the key's value on
    that machine (None: it has no such key)."""

    need: str
    key: str
    value: str | None


@dataclass(frozen=True, slots=True)
class MachineMetadata(Term):
    rule: ClassVar[str] = "MachineMetadata"
    needs: tuple[Need, ...]  # by key

    def admits(self, metadata: Mapping[str, str]) -> bool:
        return all(n.failing(metadata.get(n.key)) is None for n in self.needs)

    def check(self, job: str, machine_id: str, view: Placing) -> Rejection | None:
        metadata = view.metadata(machine_id)
        for need in self.needs:
            raw = metadata.get(need.key)
            broken = need.failing(raw)
            if broken is not None:
                subject = Broken(broken, need.key, raw)
                return Rejection(machine_id, RejectReason.METADATA, self, subject)
        return None

    def candidates(self, job: str, view: Placing) -> Collection[str]:
        return view.matching(self, self.admits)

    def nothing_left(self, job: str, view: Placing) -> Rejection:
        return Rejection("", RejectReason.METADATA, self, None)

    def standing(self, job: str, machine_id: str, view: Placing) -> list[Standing]:
        metadata = view.metadata(machine_id)
        out = []
        for need in self.needs:
            raw = metadata.get(need.key)
            broken = need.failing(raw)
            seen = f"no {need.key}" if raw is None else f"{need.key}={raw}"
            out.append(Standing(f"MachineMetadata {broken or need}", broken is None, seen))
        return out

    def __str__(self) -> str:
        return f"MachineMetadata {' '.join(map(str, self.needs))}"

    def text(self, rejection: Rejection) -> str:
        return f"no machine matches {self}"

    def heading(self, rejection: Rejection) -> str:
        s = rejection.subject
        return f"MachineMetadata {s.need}" if isinstance(s, Broken) else str(self)

    def detail(self, rejection: Rejection) -> str:
        s = rejection.subject
        if not isinstance(s, Broken):
            return ""
        return f"no {s.key}" if s.value is None else f"{s.key}={s.value}"


def read_clause(pair: str) -> Clause | None:
    """One pair of MachineMetadata as a clause (an equality as `Op.EQ`), None for a pair fleet
    ignores; UnitValidationError for a comparison that cannot be made."""
    match = _CLAUSE.fullmatch(pair)
    if match is not None:
        key, op, value = match.group(1), Op(match.group(2)), match.group(3).strip()
        if not value:
            raise UnitValidationError(f"MachineMetadata {pair}: no value after {op.value!r}")
        if op in _COMPARE and number(value) is None:
            raise UnitValidationError(
                f"MachineMetadata {pair}: {value!r} is not a number ({op.value} compares numbers)"
            )
        if op is Op.RE:
            try:
                _regex(value)
            except re.error as err:
                raise UnitValidationError(
                    f"MachineMetadata {pair}: invalid regular expression: {err}"
                ) from None
        return Clause(key, op, value)
    parts = pair.split("=")  # fleet's reading of key=value; anything else it ignores
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return None
    return Clause(parts[0], Op.EQ, parts[1])


def _parse(options: Options, name: UnitName | None) -> MachineMetadata | None:
    equal: dict[str, set[str]] = {}
    others: dict[str, list[Clause]] = {}
    for pair in [
        *options.get("X-ConditionMachineMetadata", ()),
        *options.get("MachineMetadata", ()),
    ]:
        clause = read_clause(pair)
        if clause is None:
            continue
        if clause.op is Op.EQ:
            equal.setdefault(clause.key, set()).add(clause.value)
        elif clause not in others.setdefault(clause.key, []):
            others[clause.key].append(clause)
    keys = sorted(equal.keys() | others.keys())
    if not keys:
        return None
    return MachineMetadata(
        tuple(Need(k, frozenset(equal.get(k, ())), tuple(others.get(k, ()))) for k in keys)
    )


RULE = Rule("MachineMetadata", ("MachineMetadata", "X-ConditionMachineMetadata"), _parse)
