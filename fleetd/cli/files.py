"""Local unit files as fleetctl finds them: names, symlinks, templates, --replace decisions.

Reads files, never talks to the cluster: the registry side is passed in as plain values, so
the lookup order of fleet's `lazyCreateUnits` can be tested on temporary directories alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = [
    "REPLACEABLE",
    "BadFile",
    "LocalUnit",
    "NotFound",
    "find_local",
    "local_path",
    "read_unit_file",
    "replace_allowed",
    "unit_suffix_problem",
]

# fleet's checkReplaceUnitState: the desired states a unit may be replaced in, per command.
REPLACEABLE = {
    "submit": frozenset({"inactive"}),
    "load": frozenset({"inactive", "loaded"}),
    "start": frozenset({"inactive", "loaded", "launched"}),
}


class NotFound(LookupError):
    """No local file (and no template) for a unit; str() is fleet's message."""


@dataclass(frozen=True)
class LocalUnit:
    """A unit file found on disk for a command-line argument."""

    name: str  # the unit name the argument means (from the link's name, not its target)
    path: str  # the file read (the argument, or the template next to it)
    unit: Any  # fleetd.unit.UnitFile
    from_template: bool = False


def local_path(arg: str) -> str:
    """The path fleetctl reads for an argument: `hello` -> `hello.service` (fleet's
    maybeAppendDefaultUnitType)."""
    from fleetd.unit import mangle_name

    base = arg.rstrip("/").rsplit("/", 1)[-1]
    return arg if mangle_name(arg) == base else f"{arg}.service"


class BadFile(ValueError):
    """A unit file that exists but cannot be read or parsed; str() is `/abs/path: why` (the OS's
    words, or the line the parser stopped at)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{os.path.abspath(path)}: {reason}")


def read_unit_file(path: str) -> Any:
    """Parse a local unit file (symlinks followed). Raises BadFile."""
    from fleetd.unit import UnitParseError, parse_unit

    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as err:  # a directory, no permission, a link into nowhere...
        raise BadFile(path, err.strerror or str(err)) from None
    try:
        return parse_unit(text)
    except UnitParseError as err:
        raise BadFile(path, str(err)) from None


def _template_path(arg_path: str, template: str) -> str:
    return os.path.join(os.path.dirname(arg_path), template)


def find_local(arg: str, *, registry_template: Any = None) -> LocalUnit:
    """The unit file for `arg` when the unit is not in the registry yet.

    fleet's order: the file at the argument's path (a symlink is followed for the content and
    the unit keeps the link's name); then, for an instance `p@i.s`, the template `p@.s` from the
    registry (`registry_template`: its UnitFile, or None), then the template file in the same
    directory as the argument. Raises NotFound with fleet's message (and the paths looked at),
    BadFile when a file exists but cannot be read.
    """
    from fleetd.unit import mangle_name, parse_name

    name = mangle_name(arg)
    path = local_path(arg)
    if os.path.exists(path):
        return LocalUnit(name, path, read_unit_file(path))
    info = parse_name(name)
    if not info.is_instance:
        # `hello.srvice` meant `hello.srvice.service`; an instance may hold dots (`etcd@10.0.0.1`)
        bad_suffix = unit_suffix_problem(arg)
        if bad_suffix:
            raise NotFound(bad_suffix)
        raise NotFound(
            f"unable to find Unit({name}) in Registry or on filesystem ({_looked_at(path)})"
        )
    if registry_template is not None:
        return LocalUnit(name, info.template, registry_template, from_template=True)
    tpath = _template_path(path, info.template)
    if not os.path.exists(tpath):
        raise NotFound(
            f"unable to find template Unit({info.template}) in Registry or on filesystem "
            f"({_looked_at(path)}, {_looked_at(tpath)})"
        )
    return LocalUnit(name, tpath, read_unit_file(tpath), from_template=True)


def _looked_at(path: str) -> str:
    """`looked for file /abs/path` (and what the path was, when it is a dangling link)."""
    full = os.path.abspath(path)
    if os.path.islink(path):
        return f"file {full} is a symbolic link to the missing {os.readlink(path)}"
    return f"looked for file {full}"


def unit_suffix_problem(arg: str) -> str | None:
    """What is wrong with an argument whose suffix is no unit type (`hello.srvice`), else None.

    Such an argument means `hello.srvice.service` (fleet appends `.service`); when no such
    unit exists this says what the user most likely got wrong instead of "not found".
    """
    from fleetd.unit import UNIT_TYPES

    base = arg.rstrip("/").rsplit("/", 1)[-1]
    dot = base.rfind(".")
    if dot <= 0 or base[dot + 1 :] in UNIT_TYPES:
        return None
    valid = ", ".join(f".{t}" for t in sorted(UNIT_TYPES))
    return f"{arg} has no valid unit suffix ({valid})"


def local_counterpart(arg: str) -> tuple[str, Any] | None:
    """The local file a registered unit is compared with (fleet's isLocalUnitDifferent): the
    file at the argument's path, else the template file next to it; None when neither exists.
    Raises BadFile when the one that exists cannot be read."""
    from fleetd.unit import mangle_name, parse_name

    path = local_path(arg)
    candidates = [path]
    try:
        info = parse_name(mangle_name(arg))
    except ValueError:
        info = None
    if info is not None and info.is_instance:
        candidates.append(_template_path(path, info.template))
    for candidate in candidates:
        if os.path.exists(candidate):
            return candidate, read_unit_file(candidate)
    return None


def replace_allowed(command: str, desired_state: str) -> bool:
    """Whether `command --replace` may replace a unit whose desired state is `desired_state`."""
    return desired_state in REPLACEABLE.get(command, frozenset())
