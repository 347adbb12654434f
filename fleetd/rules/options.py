"""How fleet reads an [X-Fleet] option's value before a rule sees it: quoted multi-values, the
specifiers it expands, whitespace-separated fields. Pure."""

from __future__ import annotations

from collections.abc import Iterable

from fleetd.unit_names import UnitName

__all__ = ["dedup", "expand", "fields", "multivalue"]


def multivalue(value: str) -> list[str]:
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


def expand(value: str, name: UnitName | None) -> str:
    """Substitute the specifiers fleet expands in [X-Fleet] values: %n %N %p %i."""
    if name is None:
        return value
    return (
        value.replace("%n", name.full)
        .replace("%N", name.name)
        .replace("%p", name.prefix)
        .replace("%i", name.instance)
    )


def fields(values: Iterable[str]) -> list[str]:
    """Every whitespace-separated word of `values` (Conflicts and Replaces take several)."""
    return [part for value in values for part in value.split()]


def dedup(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))
