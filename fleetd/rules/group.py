"""The group a rule counts a unit with (MaxPerMachine, Spread): `N [GLOB]` / `KEY [GLOB]`.

Without a GLOB the group is the unit's template's instances (`web@3.service`: `web@*.service`),
or for a plain unit whose name ends in digits the units differing only there (`web-1.service`:
`web-*.service`); a GLOB (Go's `path.Match`, as Conflicts) names it explicitly.
"""

from __future__ import annotations

from fleetd.rules.base import UnitValidationError
from fleetd.rules.globs import default_group, glob_error
from fleetd.unit_names import UnitName

__all__ = ["read_group"]


def read_group(option: str, value: str, name: UnitName | None) -> tuple[str, str]:
    """`FIRST [GLOB]` -> (FIRST, group glob); UnitValidationError naming the option."""
    words = value.split()
    if not words or len(words) > 2:
        raise UnitValidationError(f"{option}={value}: expected one value and, optionally, a glob")
    if len(words) == 2:
        problem = glob_error(words[1])
        if problem is not None:
            raise UnitValidationError(f"{option}={value}: {problem}")
        return words[0], words[1]
    if name is None:
        raise UnitValidationError(f"{option}={value}: needs a glob naming the group")
    return words[0], default_group(name)
