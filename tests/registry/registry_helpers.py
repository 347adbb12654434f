"""Waiting on registry events with a deadline (never on sleeps)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fleetd.errors import TemporaryError
from fleetd.model import UnitState
from fleetd.registry import Event, EventStream
from fleetd.registry.watch import Backoff
from fleetd.unit import UnitFile, parse_unit

T = TypeVar("T")

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


async def retrying(make: Callable[[], Awaitable[T]], deadline: float = DEADLINE) -> T:
    """Run an operation, retrying while etcd is (temporarily) unavailable, with a deadline.

    This retries a failed write with backoff, as any client must; it does not poll state.
    """

    async def attempt() -> T:
        backoff = Backoff(first=0.05, cap=0.5)
        while True:
            try:
                return await make()
            except TemporaryError:
                await backoff.wait()

    return await asyncio.wait_for(attempt(), deadline)
