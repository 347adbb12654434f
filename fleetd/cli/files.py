"""Local unit files as fleetctl finds them: the path an argument means, symlinks, templates.

Reads files, decides nothing: what is on disk for each argument goes to the pure planner
(`fleetd.reconcile.submit`) as plain values, which picks fleet's sources in fleet's order. A
file that cannot be read is a value too (`LocalFile.problem`), said only if the plan uses it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when read: `fleetctl version` loads no unit model
    from fleetd.reconcile.submit import Argument, LocalFile

__all__ = ["BadFile", "local_path", "read_arguments", "read_unit_file"]


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


def read_arguments(args: Iterable[str]) -> list[Argument]:
    """What is on disk for each argument (`fleetd.reconcile.submit.Argument`): the file at its
    path, else for an instance `p@i.s` the template `p@.s` in the same directory; when neither
    exists, where it looked. A symlink is followed for the content (the unit keeps the link's
    name). A file named by many arguments (the template of many instances) is read once."""
    from fleetd.reconcile.submit import Argument, LocalFile
    from fleetd.unit import UnitNameError, mangle_name, parse_name

    read: dict[tuple[str, bool], LocalFile] = {}

    def local_file(path: str, *, template: bool) -> LocalFile:
        if (path, template) not in read:
            try:
                found = LocalFile(path, read_unit_file(path), template=template)
            except BadFile as err:
                found = LocalFile(path, None, str(err), template=template)
            read[path, template] = found
        return read[path, template]

    out: list[Argument] = []
    for arg in args:
        path = local_path(arg)
        paths = [path]
        try:
            info = parse_name(mangle_name(arg))
        except UnitNameError:
            info = None
        if info is not None and info.is_instance:
            paths.append(os.path.join(os.path.dirname(path), info.template))
        found = next((p for p in paths if os.path.exists(p)), None)
        if found is None:
            out.append(Argument(arg, looked_at=tuple(_looked_at(p) for p in paths)))
        else:
            out.append(Argument(arg, local_file(found, template=found != path)))
    return out


def _looked_at(path: str) -> str:
    """`looked for file /abs/path` (and what the path was, when it is a dangling link)."""
    full = os.path.abspath(path)
    if os.path.islink(path):
        return f"file {full} is a symbolic link to the missing {os.readlink(path)}"
    return f"looked for file {full}"
