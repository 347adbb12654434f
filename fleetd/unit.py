"""Unit files as fleet understands them: parse, serialize, hash, names, [X-Fleet] requirements.

Pure: no I/O. Every other layer uses this model. The rules follow fleet 1.0 (and the go-systemd
deserializer it vendors) so that one file gets the same options and the same hash in fleet and
in fleetd; where fleet silently accepted garbage, we refuse it with an error naming the line.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "MAX_LINE_BYTES",
    "MAX_NAME_LENGTH",
    "SHORT_ID_LENGTH",
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

# A machine's short ID is the first this many characters of its ID (see short_id).
SHORT_ID_LENGTH = 8

# systemd's LINE_MAX as fleet enforces it: a line of this many bytes or more is refused.
MAX_LINE_BYTES = 2048
MAX_NAME_LENGTH = 256

# Every unit type systemd knows (fleet's API accepts all of them).
UNIT_TYPES = frozenset(
    {
        "automount", "busname", "device", "mount", "path", "scope", "service",
        "slice", "snapshot", "socket", "swap", "target", "timer",
    }
)  # fmt: skip
# Types that may carry an "@": templates and their instances.
TEMPLATE_TYPES = frozenset({"path", "service", "socket", "target", "timer"})
# Characters allowed before the type suffix (systemd's, as fleet checks them; "\" is systemd's
# escape character, as in "foo\x2dbar.service").
_NAME_CHARS = re.compile(r"[A-Za-z0-9:_.@\\-]")

# Go's unicode.IsSpace for the runes that matter here, so values are trimmed exactly as fleet does.
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"  # noqa: E501
_COMMENT = ("#", ";")
_TRUTHY = frozenset({"true", "yes", "1", "on", "t"})


class UnitParseError(ValueError):
    """Unit file text that cannot be read; names the line (1-based) where reading stopped.

    `line` is 0 for options that did not come from text (the API's option lists).
    """

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}" if line > 0 else message)
        self.line = line
        self.message = message


class UnitNameError(ValueError):
    """A unit name systemd (and so fleet) would not accept."""


class UnitValidationError(ValueError):
    """Options that parse but cannot be scheduled (fleet's ValidateOptions messages)."""


@dataclass(frozen=True, slots=True)
class UnitOption:
    section: str
    name: str
    value: str


# --------------------------------------------------------------------------------------------
# Parsing and serializing


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
        return hashlib.sha1(self.serialize().encode("utf-8", "surrogatepass")).hexdigest()

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


# --------------------------------------------------------------------------------------------
# Names


@dataclass(frozen=True, slots=True)
class UnitName:
    """`prefix@instance.type`, split as fleet splits it."""

    full: str
    name: str  # without the type suffix: "apache@80"
    prefix: str  # before the first "@": "apache"
    instance: str  # between the first "@" and the last ".": "80" ("" for templates)
    template: str  # "apache@.service" for templates and instances, "" otherwise
    type: str  # "service"

    @property
    def is_template(self) -> bool:
        return bool(self.template) and not self.instance

    @property
    def is_instance(self) -> bool:
        return bool(self.instance)


def validate_name(name: str) -> None:
    """Raise UnitNameError (fleet's messages) unless `name` is a valid unit name.

    Besides fleet's rules, a name can never become a path outside a directory: "/" and control
    characters are refused by the character rule, and names starting with "." are refused.
    """
    if not isinstance(name, str) or not name:
        raise UnitNameError("unit name cannot be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise UnitNameError(f"unit name exceeds maximum length ({MAX_NAME_LENGTH})")
    dot = name.rfind(".")
    if dot == -1:
        raise UnitNameError('unit name must contain "."')
    if dot == len(name) - 1:
        raise UnitNameError('unit name cannot end in "."')
    suffix = name[dot + 1 :]
    if suffix not in UNIT_TYPES:
        raise UnitNameError(f"invalid unit type: {_go_quote(suffix)}")
    if "@" in name and suffix not in TEMPLATE_TYPES:
        raise UnitNameError(f"invalid unit type for template: {_go_quote(suffix)}")
    for char in name[:dot]:
        if not _NAME_CHARS.fullmatch(char):
            raise UnitNameError(f"invalid character {_go_quote(char, quote=chr(39))} in unit name")
    if name.startswith("@"):
        raise UnitNameError('unit name cannot start in "@"')
    if name.startswith("."):
        raise UnitNameError('unit name cannot start in "."')


def _go_quote(s: str, quote: str = '"') -> str:
    """Go's %q for the short strings in fleet's messages."""
    body = "".join(
        c if c.isprintable() and c not in (quote, "\\") else
        ("\\" + c if c in (quote, "\\") else f"\\x{ord(c):02x}" if ord(c) < 0x100
         else f"\\u{ord(c):04x}")
        for c in s
    )  # fmt: skip
    return f"{quote}{body}{quote}"


def parse_name(name: str) -> UnitName:
    """Validate and split a unit name."""
    validate_name(name)
    dot = name.rfind(".")
    base, suffix = name[:dot], name[dot + 1 :]
    at = base.find("@")
    if at == -1:
        return UnitName(name, base, base, "", "", suffix)
    prefix = base[:at]
    return UnitName(name, base, prefix, base[at + 1 :], f"{prefix}@.{suffix}", suffix)


def mangle_name(arg: str) -> str:
    """The unit name a fleetctl argument means: `dir/hello` -> `hello.service`.

    fleet appended ".service" to every name whose type it did not list (so `foo.target` became
    `foo.target.service`); we keep every type systemd knows.
    """
    base = arg.rstrip("/").rsplit("/", 1)[-1]
    dot = base.rfind(".")
    if dot != -1 and base[dot + 1 :] in UNIT_TYPES:
        return base
    return f"{base}.service"


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


# --------------------------------------------------------------------------------------------
# [X-Fleet]

_XFLEET = "X-Fleet"
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
    def of(cls, unit: UnitFile, unit_name: str) -> Requirements:
        try:
            name: UnitName | None = parse_name(unit_name)
        except UnitNameError:
            name = None
        raw: dict[str, list[str]] = {}
        unknown: list[str] = []
        for opt in unit.options:
            if opt.section != _XFLEET:
                continue
            if opt.name not in _ALIASES and opt.name not in unknown:
                unknown.append(opt.name)
            raw.setdefault(opt.name, []).extend(_expand(v, name) for v in _multivalue(opt.value))

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
                        f"unresolvable requirements: peer {_go_quote(peer)} "
                        f"matches conflict {_go_quote(conflict)}"
                    )
            for replace in self.replaces:
                if glob_match(replace, peer):
                    raise UnitValidationError(
                        f"unresolvable requirements: peer {_go_quote(peer)} "
                        f"matches replace {_go_quote(replace)}"
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
    since this module is the lowest layer; `fleetd.model` re-exports it for everyone else."""
    return machine_id[:SHORT_ID_LENGTH]


def _fields(values: Iterable[str]) -> list[str]:
    return [part for value in values for part in value.split()]


def _dedup(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


@functools.lru_cache(maxsize=16384)
def _requirements(unit: UnitFile, unit_name: str) -> Requirements:
    return Requirements.of(unit, unit_name)
