"""Unit names as fleet takes them: `ValidateName`'s rules and messages, templates and instances,
and the name a fleetctl argument means.

Pure, and the lowest layer of the unit model: a name is checked before it becomes a key, a path
or a D-Bus call, so no other rule may be needed to read one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "MAX_NAME_LENGTH",
    "TEMPLATE_TYPES",
    "UNIT_TYPES",
    "UnitName",
    "UnitNameError",
    "go_quote",
    "mangle_name",
    "parse_name",
    "validate_name",
]

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
_NAME_BODY = re.compile(r"[A-Za-z0-9:_.@\\-]*")  # the whole part before the suffix, at once


class UnitNameError(ValueError):
    """A unit name systemd (and so fleet) would not accept."""


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
        raise UnitNameError(f"invalid unit type: {go_quote(suffix)}")
    if "@" in name and suffix not in TEMPLATE_TYPES:
        raise UnitNameError(f"invalid unit type for template: {go_quote(suffix)}")
    if not _NAME_BODY.fullmatch(name, 0, dot):  # then find the first character refused
        char = next(c for c in name[:dot] if not _NAME_CHARS.fullmatch(c))
        raise UnitNameError(f"invalid character {go_quote(char, quote=chr(39))} in unit name")
    if name.startswith("@"):
        raise UnitNameError('unit name cannot start in "@"')
    if name.startswith("."):
        raise UnitNameError('unit name cannot start in "."')


def go_quote(s: str, quote: str = '"') -> str:
    """Go's %q for the short strings in fleet's messages (names here, [X-Fleet] patterns in
    `fleetd.rules`)."""
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
