"""systemd's ActiveStates, grouped by what fleetd makes of them — each group written once.

The agent's planner, the agent's adoption after a restart, the unit listings and the waits
of `fleetctl` all judge a unit by its ActiveState; they ask here, so "running" means the same
thing to all of them.
"""

from __future__ import annotations

__all__ = [
    "LAUNCHED_STATES",
    "RUNNING_STATES",
    "STARTED_STATES",
    "TRANSIENT_STATES",
    "adopted_as_started",
]

# The unit runs or is on its way to running: the agent stops it before it removes or replaces
# its file, and when it should only be loaded.
RUNNING_STATES = frozenset({"active", "activating", "reloading"})

# fleet's current state "launched" for a placed unit: it was started, whether it still runs or
# has failed since (a failed unit stays launched until someone stops it).
LAUNCHED_STATES = RUNNING_STATES | {"failed"}

# A unit found in one of these when fleetd starts was started by a fleetd before (or is being
# stopped): it is adopted as started and never started again, so a unit that failed before the
# restart stays failed instead of being run once more by the new fleetd.
STARTED_STATES = LAUNCHED_STATES | {"deactivating"}


# On the way to a definite answer: between a restart's stop and its start, or between two
# automatic restarts (Restart=); a waiter waits on.
TRANSIENT_STATES = frozenset({"activating", "deactivating", "reloading"})


def adopted_as_started(active: str) -> bool:
    """Whether a unit adopted in ActiveState `active` counts as started by this agent."""
    return active in STARTED_STATES
