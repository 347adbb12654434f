"""Go's `path.Match`, which fleet uses for Conflicts and Replaces, and the unit groups of
MaxPerMachine and Spread. Pure."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from fleetd.unit_names import UnitName

__all__ = ["default_group", "glob_any", "glob_error", "glob_match"]


def glob_match(pattern: str, name: str) -> bool:
    """Go's path.Match, which fleet uses for Conflicts and Replaces.

    `*` any run of characters but `/`, `?` one such character, `[...]` a class (`[^...]`
    negates, ranges with `-`), `\\` escapes. A malformed pattern matches nothing (Go returns an
    error there, and fleet treats it as no match).
    """
    return _matcher(pattern)(name)


@functools.lru_cache(maxsize=4096)
def _matcher(pattern: str) -> Callable[[str], bool]:
    if not any(c in pattern for c in "*?[\\"):
        return pattern.__eq__
    regex = _glob_regex(pattern)
    if regex is None:
        return lambda name: False
    fullmatch = regex.fullmatch
    return lambda name: fullmatch(name) is not None


@functools.lru_cache(maxsize=4096)
def glob_any(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """A test of whether a name matches any of `patterns` (made once per pattern list: rules
    ask it for every neighbour of every machine they check)."""
    if len(patterns) == 1:
        return _matcher(patterns[0])
    matchers = tuple(_matcher(p) for p in patterns)
    return lambda name: any(m(name) for m in matchers)


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


def glob_error(pattern: str) -> str | None:
    """Why `pattern` is not a well-formed glob, or None."""
    if any(c in pattern for c in "*?[\\") and _glob_regex(pattern) is None:
        return f"{pattern!r} is not a valid pattern (Go's path.Match syntax)"
    return None


_TRAILING_DIGITS = re.compile(r"[0-9]+$")


def default_group(name: UnitName) -> str:
    """The units counted together with `name` when a rule names no group: the instances of
    its template (`web@3.service` -> `web@*.service`); for a plain unit whose name ends in
    digits, the units that differ only there (`web-1.service` -> `web-*.service`); otherwise
    the unit alone."""
    if name.is_instance:
        return f"{_escaped(name.prefix)}@*.{name.type}"
    if _TRAILING_DIGITS.search(name.name):
        return f"{_escaped(_TRAILING_DIGITS.sub('', name.name))}*.{name.type}"
    return _escaped(name.full)


def _escaped(literal: str) -> str:
    return "".join("\\" + c if c in "*?[\\" else c for c in literal)
