"""Helpers shared by the systemd tests: waiting for pushed states with a deadline."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fleetd.systemd import UnitChanges, UnitState

HELLO = "[Service]\nExecStart=/bin/sh -c 'while true; do echo Hello World; sleep 1; done'\n"
EVENT_DEADLINE = 15.0  # seconds to wait for a pushed event before failing


async def wait_state(
    changes: UnitChanges,
    name: str,
    *,
    active: str | None = None,
    sub: str | None = None,
    load: str | None = None,
    within: float = EVENT_DEADLINE,
) -> UnitState:
    """The first pushed state of `name` matching the given fields (deadline: `within`)."""

    async def first_match() -> UnitState:
        async for state in changes:
            if state.name == name and all(
                want is None or got == want
                for want, got in ((active, state.active), (sub, state.sub), (load, state.load))
            ):
                return state
        raise AssertionError("stream ended")

    try:
        return await asyncio.wait_for(first_match(), within)
    except TimeoutError:
        raise AssertionError(
            f"no state {name} load={load} active={active} sub={sub} within {within}s"
        ) from None


def process_gone(pid: int) -> bool:
    """True when `pid` no longer exists or is a zombie (PID 1 here does not reap)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return any(line.startswith("State:") and "Z" in line.split()[1] for line in status.splitlines())
