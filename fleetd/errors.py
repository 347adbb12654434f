"""The two kinds of error every adapter translates library exceptions into (STYLE.md §7).

- PermanentError: the request itself is wrong (bad input, a conflict); retrying changes nothing.
  Report it precisely and change nothing.
- TemporaryError: a dependency (etcd, D-Bus) is unavailable or timed out; retry with a capped
  backoff.
"""

from __future__ import annotations


class FleetdError(Exception):
    """Base of fleetd's own errors."""


class PermanentError(FleetdError):
    """Bad input or a conflicting request: do not retry."""


class TemporaryError(FleetdError):
    """A dependency is unavailable or slow: retry later."""
