"""Where a lease's ID outlives the fleetd that holds it (the agent's membership lease, the
engine's leadership lease), so a fleetd restarted within the lease's TTL re-attaches to it:
nothing fails over, no unit restarts, no scheduling pause.

The file is a hint, never a requirement: a missing, unreadable or garbled file means "no lease
to re-attach to", and one that cannot be written costs only the re-attach after a restart, so
neither is worth stopping the agent or the engine for.
"""

from __future__ import annotations

from pathlib import Path

import structlog

__all__ = ["LeaseFile"]

log = structlog.get_logger(__name__)


class LeaseFile:
    """A lease ID kept in a file, in hex (`None` path: kept nowhere)."""

    def __init__(self, path: Path | str | None) -> None:
        self.path = Path(path) if path is not None else None

    def load(self) -> int | None:
        """The lease ID saved last, or None."""
        if self.path is None:
            return None
        try:
            return int(self.path.read_text().strip(), 16)
        except (OSError, ValueError):
            return None

    def save(self, lease_id: int) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(f"{lease_id:x}\n")
        except OSError as err:
            log.warning("lease_file.unwritable", path=str(self.path), error=str(err))

    def forget(self) -> None:
        """No lease to re-attach to any more (it was revoked on purpose)."""
        if self.path is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError as err:
            log.warning("lease_file.unwritable", path=str(self.path), error=str(err))
