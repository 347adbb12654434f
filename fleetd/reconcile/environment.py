"""The environment a unit's health check (`UpdateHealthCheck=`) runs with: the unit's
`[Service] Environment=` values, read as systemd reads them, and FLEET_UNIT, FLEET_MACHINE_ID.
Pure: the agent's gate shell runs the check.
"""

from __future__ import annotations

from collections.abc import Sequence

from fleetd.unit import UnitFile
from fleetd.unit_names import UnitNameError, parse_name

__all__ = ["check_environment", "environment_values"]


def check_environment(unit: UnitFile | None, name: str, machine_id: str) -> dict[str, str]:
    """The variables a health check runs with: the unit's `[Service] Environment=` values (its
    specifiers expanded as systemd does for the unit `name`), FLEET_UNIT and FLEET_MACHINE_ID."""
    env = environment_values(unit.values("Service", "Environment"), name) if unit else {}
    env["FLEET_UNIT"] = name
    env["FLEET_MACHINE_ID"] = machine_id
    return env


def environment_values(values: Sequence[str], name: str = "") -> dict[str, str]:
    """The assignments of `Environment=` lines, as systemd reads them: each line a list of
    words split on whitespace, with "…" or '…' quoting and C escapes; an empty line resets
    the list; a word that is no `NAME=value` is ignored (systemd ignores it too)."""
    env: dict[str, str] = {}
    for value in values:
        if not value.strip():
            env.clear()
            continue
        for word in _words(_specifiers(value, name)):
            key, eq, val = word.partition("=")
            if eq and key and _valid_name(key):
                env[key] = val
    return env


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
            "s": " ", "\\": "\\", '"': '"', "'": "'"}  # fmt: skip


def _words(text: str) -> list[str]:
    """systemd's extract_first_word(EXTRACT_UNQUOTE | EXTRACT_CUNESCAPE), word by word."""
    words: list[str] = []
    word: list[str] | None = None
    quote = ""
    i = 0
    while i < len(text):
        char = text[i]
        i += 1
        if char == "\\":
            escaped, i = _unescape(text, i)
            word = (word or []) + [escaped]
        elif quote:
            if char == quote:
                quote = ""
            else:
                word = (word or []) + [char]
        elif char in "\"'":
            quote, word = char, word or []
        elif char.isspace():
            if word is not None:
                words.append("".join(word))
            word = None
        else:
            word = (word or []) + [char]
    if word is not None:
        words.append("".join(word))
    return words


def _unescape(text: str, i: int) -> tuple[str, int]:
    """The character a backslash before `text[i]` stands for, and where reading goes on."""
    if i >= len(text):
        return "", i
    char = text[i]
    if char in _ESCAPES:
        return _ESCAPES[char], i + 1
    if char == "x" and _is_hex(text[i + 1 : i + 3], 2):
        return chr(int(text[i + 1 : i + 3], 16)), i + 3
    octal = text[i : i + 3]
    if len(octal) == 3 and all(c in "01234567" for c in octal):
        return chr(int(octal, 8)), i + 3
    return char, i + 1


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdefABCDEF" for c in text)


def _valid_name(key: str) -> bool:
    return not key[0].isdigit() and all(c.isascii() and (c.isalnum() or c == "_") for c in key)


def _specifiers(value: str, name: str) -> str:
    """Expand the unit-name specifiers systemd expands in Environment= (%n %N %p %P %i %I %%);
    other specifiers are kept as written."""
    try:
        unit = parse_name(name) if name else None
    except UnitNameError:
        unit = None
    if unit is None or "%" not in value:
        return value
    known = {"n": unit.full, "N": unit.name, "p": unit.prefix, "P": unit.prefix,
             "i": unit.instance, "I": unit.instance, "%": "%"}  # fmt: skip
    out: list[str] = []
    i = 0
    while i < len(value):
        char = value[i]
        if char == "%" and i + 1 < len(value) and value[i + 1] in known:
            out.append(known[value[i + 1]])
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)
