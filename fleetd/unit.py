"""Unit files as fleet understands them: parse, serialize, hash.

Pure: no I/O. Every other layer uses this model. The rules follow fleet 1.0 (and the go-systemd
deserializer it vendors) so that one file gets the same options and the same hash in fleet and
in fleetd; where fleet silently accepted garbage, we refuse it with an error naming the line.

The unit model has two more rooms below this one: names (`fleetd.unit_names`: fleet's
`ValidateName`, templates and instances, fleetctl's name mangling) and the [X-Fleet]
placement rules (`fleetd.rules`, one module per rule). This module re-exports what they offer, so
`fleetd.unit` stays the one import for the whole model.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from fleetd.rules import (
    READS,
    SHORT_ID_LENGTH,
    XFLEET,
    Requirements,
    UnitValidationError,
    glob_match,
    short_id,
)
from fleetd.unit_names import (
    MAX_NAME_LENGTH,
    UNIT_TYPES,
    UnitName,
    UnitNameError,
    mangle_name,
    parse_name,
    validate_name,
)

__all__ = [
    "MAX_LINE_BYTES",
    "MAX_NAME_LENGTH",
    "SHORT_ID_LENGTH",
    "UNIT_TYPES",
    "Requirements",
    "UnitFile",
    "UnitName",
    "UnitNameError",
    "UnitOption",
    "UnitParseError",
    "UnitValidationError",
    "glob_match",
    "mangle_name",
    "parse_name",
    "parse_unit",
    "short_id",
    "validate_name",
]

# systemd's LINE_MAX as fleet enforces it: a line of this many bytes or more is refused.
MAX_LINE_BYTES = 2048

# Go's unicode.IsSpace for the runes that matter here, so values are trimmed exactly as fleet does.
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"  # noqa: E501
_COMMENT = ("#", ";")


class UnitParseError(ValueError):
    """Unit file text that cannot be read; names the line (1-based) where reading stopped.

    `line` is 0 for options that did not come from text (the API's option lists).
    """

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}" if line > 0 else message)
        self.line = line
        self.message = message


@dataclass(frozen=True, slots=True)
class UnitOption:
    section: str
    name: str
    value: str


def parse_unit(text: str) -> UnitFile:
    """Parse unit-file text into a UnitFile.

    Raises UnitParseError (naming the line) on anything fleet or systemd would not read.
    """
    return UnitFile(tuple(_grouped(_lex(text))))


def _strip(s: str) -> str:
    return s.strip(_GO_SPACE)


def _lex(text: str) -> Iterable[UnitOption]:
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise UnitParseError(line, "NUL character in unit file")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the text's final newline ends the last line, it does not start one
    for number, line in enumerate(lines, start=1):
        if len(line.encode("utf-8", "surrogatepass")) >= MAX_LINE_BYTES:
            raise UnitParseError(number, f"line too long (max {MAX_LINE_BYTES} bytes)")

    section: str | None = None
    i = 0
    while i < len(lines):
        number = i + 1
        line = lines[i].removesuffix("\r")
        i += 1
        stripped = line.lstrip(_GO_SPACE)
        if not stripped:
            continue
        if stripped.startswith(_COMMENT):
            # fleet's lexer: a comment ending in a backslash swallows the next line too.
            while line.removesuffix(" ").endswith("\\") and i < len(lines):
                line = lines[i].removesuffix("\r")
                i += 1
            continue
        if stripped.startswith("["):
            end = stripped.find("]")
            if end == -1:
                raise UnitParseError(number, "unable to find end of section")
            garbage = _strip(stripped[end + 1 :])
            if garbage:
                raise UnitParseError(
                    number, f"found garbage after section name {stripped[1:end]}: {garbage!r}"
                )
            section = stripped[1:end]
            if not section:
                raise UnitParseError(number, "section name cannot be empty")
            continue
        if section is None:
            raise UnitParseError(number, "option outside of any [Section]")
        eq = stripped.find("=")
        if eq == -1:
            raise UnitParseError(number, f"expected Name=Value, found {_strip(stripped)!r}")
        name = _strip(stripped[:eq])
        if not name:
            raise UnitParseError(number, "option name cannot be empty")
        value, i = _read_value(stripped[eq + 1 :], lines, i)
        yield UnitOption(section, name, value)


def _read_value(first: str, lines: Sequence[str], i: int) -> tuple[str, int]:
    """Read an option value starting with `first`, following trailing-backslash continuations.

    Mirrors go-systemd: the backslash and the newline are kept in the value; a blank line ends
    the continuation; the whole value is trimmed (keeping a final newline if one was kept).
    """
    parts: list[str] = []
    line = first
    while True:
        if not _strip(line):
            break
        parts.append(line)
        if not line.endswith("\\"):
            break
        if i >= len(lines):  # a backslash on the last line of the file
            break
        parts.append("\n")
        line = lines[i].removesuffix("\r")
        i += 1
    value = "".join(parts)
    if value.endswith("\n"):
        return _strip(value) + "\n", i
    return _strip(value), i


def _grouped(options: Iterable[UnitOption]) -> list[UnitOption]:
    """Options grouped by section in first-appearance order, order kept within a section.

    This is the order fleet serializes (and hashes) in, so storing it this way makes
    parse(serialize(u)) == u hold for every unit.
    """
    by_section: dict[str, list[UnitOption]] = {}
    for option in options:
        by_section.setdefault(option.section, []).append(option)
    return [option for group in by_section.values() for option in group]


@dataclass(frozen=True, slots=True)
class UnitFile:
    """A unit file: its options in canonical (serialization) order."""

    options: tuple[UnitOption, ...]
    # its content hash, computed once: every reader asks it (jobs name contents by it), and
    # the file is hashed by it (its requirements are cached per file and unit name)
    _digest: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        text = self.serialize().encode("utf-8", "surrogatepass")
        object.__setattr__(self, "_digest", hashlib.sha1(text).hexdigest())

    def __hash__(self) -> int:
        return hash(self._digest)

    @classmethod
    def from_options(cls, options: Iterable[UnitOption | tuple[str, str, str]]) -> UnitFile:
        """Build from (section, name, value) triples, as the API delivers them.

        Raises UnitParseError if the options would not read back as themselves (a newline in a
        name, an "=" in an option name, a line over the limit, ...).
        """
        opts = [o if isinstance(o, UnitOption) else UnitOption(*o) for o in options]
        for opt in opts:
            for what in ("section", "name", "value"):
                if not isinstance(getattr(opt, what), str):
                    raise UnitParseError(0, f"option {what} must be a string")
        unit = cls(tuple(_grouped(opts)))
        try:
            reread = parse_unit(unit.serialize())
        except UnitParseError as err:
            raise UnitParseError(0, f"invalid options: {err.message}") from None
        if reread != unit:
            mine, theirs = unit.options, reread.options
            index = next(
                (i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b), None
            )
            culprit = mine[index] if index is not None else mine[min(len(mine), len(theirs)) - 1]
            raise UnitParseError(0, f"option would not read back as written: {culprit!r}")
        return unit

    def serialize(self) -> str:
        """The text fleet stores and hashes: sections in order, one blank line between them."""
        out: list[str] = []
        section: str | None = None
        for opt in self.options:
            if opt.section != section:
                if section is not None:
                    out.append("\n")
                out.append(f"[{opt.section}]\n")
                section = opt.section
            out.append(f"{opt.name}={opt.value}\n")
        return "".join(out)

    @property
    def hash(self) -> str:
        """SHA-1 (lower-case hex) of the serialized form, as fleet computes it."""
        return self._digest

    @property
    def short_hash(self) -> str:
        return self.hash[:7]

    def values(self, section: str, name: str) -> list[str]:
        return [o.value for o in self.options if o.section == section and o.name == name]

    @property
    def description(self) -> str:
        values = self.values("Unit", "Description")
        return values[0] if values else ""

    def requirements(self, unit_name: str) -> Requirements:
        """The [X-Fleet] requirements of this file when submitted under `unit_name` (computed
        once per file and name: readers ask for them per unit on every event they follow)."""
        return _requirements(self, unit_name)


@functools.lru_cache(maxsize=16384)
def _requirements(unit: UnitFile, unit_name: str) -> Requirements:
    xfleet = ((o.name, o.value) for o in unit.options if o.section == XFLEET)
    reads = ((key, o.value) for o in unit.options if (key := f"{o.section}.{o.name}") in READS)
    return Requirements.of(xfleet, unit_name, reads)
