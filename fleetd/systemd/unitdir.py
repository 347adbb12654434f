"""The units directory fleetd owns (default `/run/fleet/units/`): atomic writes and removals.

Every name is validated with `fleetd.unit.validate_name` before it becomes a path, so no name can
escape the directory; temporary files start with "." (never a valid unit name), so listings never
see a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from fleetd.errors import PermanentError
from fleetd.unit import UnitFile, UnitNameError, validate_name


class BadUnitName(PermanentError):
    """A unit name that can not be a file in the units directory."""


class UnitDir:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def path_of(self, name: str) -> Path:
        try:
            validate_name(name)
        except UnitNameError as exc:
            raise BadUnitName(f"{name!r}: {exc}") from exc
        path = self.path / name
        if path.parent != self.path:  # belt and braces: validate_name already refuses "/"
            raise BadUnitName(f"{name!r} is not a plain file name")
        return path

    def write(self, name: str, content: UnitFile | str) -> Path:
        """Write `content` as `name`, atomically (temporary file, fsync, rename)."""
        path = self.path_of(name)
        text = content.serialize() if isinstance(content, UnitFile) else content
        self.path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=self.path)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return path

    def remove(self, name: str) -> bool:
        """Remove `name`; False when it was not there."""
        try:
            self.path_of(name).unlink()
        except FileNotFoundError:
            return False
        return True

    def read(self, name: str) -> str | None:
        try:
            return self.path_of(name).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def names(self) -> list[str]:
        """The unit files in the directory, sorted (anything that is not a unit name is ignored)."""
        try:
            entries = os.listdir(self.path)
        except FileNotFoundError:
            return []
        names = []
        for entry in entries:
            try:
                validate_name(entry)
            except UnitNameError:
                continue
            if (self.path / entry).is_file():
                names.append(entry)
        return sorted(names)
