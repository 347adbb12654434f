"""The registry's typed errors: what went wrong, in fleet's words, and whether to retry."""

from __future__ import annotations

from collections.abc import Sequence

from fleetd.errors import PermanentError, TemporaryError

__all__ = [
    "EtcdAuthError",
    "EtcdRequestFailed",
    "EtcdTLSError",
    "EtcdUnavailable",
    "JobNotFound",
    "MachineIdInUse",
    "RegistryConflict",
    "RegistryError",
    "UnitExists",
    "WatchCompacted",
    "WatchInterrupted",
]


class RegistryError(Exception):
    """Mixin base of every registry error (each is also Permanent or Temporary)."""


class EtcdUnavailable(RegistryError, TemporaryError):
    """etcd did not answer (down, unreachable, timed out): retry with backoff."""

    def __init__(self, endpoints: Sequence[str], detail: str) -> None:
        self.endpoints = list(endpoints)
        self.detail = detail
        super().__init__(f"etcd unavailable at {', '.join(self.endpoints)}: {detail}")


class EtcdTLSError(RegistryError, PermanentError):
    """The TLS handshake with etcd failed: wrong CA, certificate or server name."""

    def __init__(self, endpoints: Sequence[str], detail: str, ca_file: object = None) -> None:
        self.endpoints = list(endpoints)
        ca = f"the CA file {ca_file}" if ca_file else "the configured CA"
        super().__init__(
            f"TLS handshake with etcd at {', '.join(self.endpoints)} failed "
            f"(is {ca} the CA that signed etcd's certificate?): {detail}"
        )


class EtcdAuthError(RegistryError, PermanentError):
    """etcd refused our credentials or our user lacks a permission."""


class UnitExists(RegistryError, PermanentError):
    """A job of that name exists with different content; fleet requires destroying it first."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"unit {name} already exists with different content; "
            f"destroy it first (fleetctl destroy {name}) to submit the new version"
        )


class JobNotFound(RegistryError, PermanentError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unit {name} does not exist")


class MachineIdInUse(RegistryError, PermanentError):
    """Another live agent (another lease) holds this machine ID."""

    def __init__(self, machine_id: str) -> None:
        self.machine_id = machine_id
        super().__init__(
            f"machine ID {machine_id} is registered by another live fleetd "
            f"(a different lease holds it); two agents must not share a machine ID"
        )


class RegistryConflict(RegistryError, TemporaryError):
    """A guarded write kept losing to concurrent writers; re-read and try again."""


class EtcdRequestFailed(RegistryError, PermanentError):
    """etcd rejected a request for a reason retrying will not fix (bad request, too large...)."""


class WatchInterrupted(RegistryError, TemporaryError):
    """A watch stream broke or was re-created: resume from the last revision seen."""


class WatchCompacted(RegistryError, TemporaryError):
    """The revision a watch resumes from was compacted away: relist, then watch again."""

    def __init__(self, compact_revision: int) -> None:
        self.compact_revision = compact_revision
        super().__init__(f"etcd history compacted up to revision {compact_revision}")


class RolloutInProgress(RegistryError, PermanentError):
    """A rollout of the unit (or template) is running: one at a time."""

    def __init__(self, name: str, progress: str) -> None:
        self.name = name
        super().__init__(
            f"a rollout of {name} is in progress ({progress}): wait for it "
            f"(fleetctl rollout status {name}) or undo it (fleetctl rollout undo {name})"
        )
