"""Waiting on registry events with a deadline (never on sleeps)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fleetd.model import UnitState
from fleetd.registry import Event, EventStream
from fleetd.unit import UnitFile, parse_unit
from tests.waiting import retrying as retrying  # the registry tests import it here

DEADLINE = 10.0  # seconds; a generous bound, never an expectation of speed


async def next_matching(
    stream: EventStream, predicate: Callable[[Event], bool], deadline: float = DEADLINE
) -> tuple[Event, list[Event]]:
    """The first event satisfying `predicate`, and every event seen up to it."""
    seen: list[Event] = []

    async def scan() -> Event:
        async for event in stream:
            seen.append(event)
            if predicate(event):
                return event
        raise AssertionError("the event stream ended")

    return await asyncio.wait_for(scan(), deadline), seen


async def take(stream: EventStream, count: int, deadline: float = DEADLINE) -> list[Event]:
    """The next `count` events."""

    async def scan() -> list[Event]:
        out: list[Event] = []
        async for event in stream:
            out.append(event)
            if len(out) == count:
                return out
        raise AssertionError("the event stream ended")

    return await asyncio.wait_for(scan(), deadline)


def unit(text: str = "sleep infinity") -> UnitFile:
    return parse_unit(f"[Unit]\nDescription=test\n\n[Service]\nExecStart=/bin/sh -c '{text}'\n")


def state(name: str, machine: str, active: str = "active") -> UnitState:
    return UnitState(name, machine, unit().hash, "loaded", active, "running")
