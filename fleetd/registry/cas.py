"""Optimistic changes, retried a bounded number of times (STYLE.md §6), written once.

Every guarded change of the registry has one shape: read what the change depends on, decide,
commit one txn guarded on what was read. A guard that fails means another writer came in
between, so the change reads and decides again — a bounded number of times: under a storm of
writers it gives up with RegistryConflict (a temporary error, the caller may try later) rather
than spin. `until_won` holds that loop; each change passes its own read-decide-commit as an
`attempt`, which returns its outcome, raises what is final (JobNotFound, UnitExists...), or
returns LOST to be tried again. Reading at one revision while etcd compacts it away is the
same race against another writer (etcd's compactor), so those reads are retried here too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import Enum
from typing import TypeVar

from fleetd.registry.errors import RegistryConflict

__all__ = ["CAS_ATTEMPTS", "LOST", "Lost", "until_won"]

CAS_ATTEMPTS = 8  # attempts of one change before RegistryConflict

T = TypeVar("T")


class Lost(Enum):
    """An attempt's answer when a concurrent writer beat its guard: read and decide again."""

    LOST = "lost"


LOST = Lost.LOST


async def until_won(attempt: Callable[[], Awaitable[T | Lost]], conflict: str) -> T:
    """What `attempt` returns first that is not LOST, trying it at most CAS_ATTEMPTS times;
    RegistryConflict(`conflict`) when every attempt lost. What it raises goes through."""
    for _ in range(CAS_ATTEMPTS):
        outcome = await attempt()
        if outcome is not LOST:
            return outcome
    raise RegistryConflict(conflict)
