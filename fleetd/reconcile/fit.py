"""Which machines have room for a unit with reservations, found without asking every machine.

In a plan over many machines, most machines that a least-loaded (or fullest-first) order
offers first are already too full for a unit that reserves: asking each in turn made placing
10,000 such units on 1,000 machines take seconds. `FitIndex` files the machines by classes of
free room — per dimension (memory, CPU) a power of two — with one heap per class, ordered by
the plan's key. A unit is offered the machines of the classes that may hold what it needs in
every dimension (only machines of a class at its need's own power of two may have less), in
key order across those classes.

Pure; the scheduler tells it after each assignment (`moved`). Heap entries go stale when a
machine's room or key changes: a newer entry was pushed then, and the stale one is skipped.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

__all__ = ["FitIndex", "room_class"]

Key = tuple[Any, ...]
Class = tuple[int, ...]


def room_class(room: float) -> int:
    """The class of a free room: floor(log2(room)); everything below 1 in class -1."""
    return math.floor(math.log2(room)) if room >= 1 else -1


class FitIndex:
    """Machines by classes of free room (a tuple of dimensions), each class a heap by `key`."""

    def __init__(
        self,
        machines: Collection[str],
        room: Callable[[str], Sequence[float] | None],
        key: Callable[[str], Key],
    ) -> None:
        self._room = room  # free room of a machine now, per dimension (None: never offered)
        self._key = key
        self._classes: dict[Class, list[tuple[Key, str]]] = {}
        self._filed: dict[str, tuple[Class, Key]] = {}  # where each machine is filed now
        for machine_id in machines:
            self.moved(machine_id)

    def moved(self, machine_id: str) -> None:
        """The machine's room or key changed: file it under its class now."""
        room = self._room(machine_id)
        if room is None:
            self._filed.pop(machine_id, None)
            return
        number = tuple(room_class(r) for r in room)
        key = self._key(machine_id)
        if self._filed.get(machine_id) == (number, key):
            return
        self._filed[machine_id] = (number, key)
        heapq.heappush(self._classes.setdefault(number, []), (key, machine_id))

    def offered(self, needs: Sequence[float]) -> Iterator[str]:
        """Machines that may have room for `needs`, in key order, each once; lazily: entries
        taken and not used are put back when the caller closes the iterator."""
        wanted = [room_class(n) if n > 0 else -1 for n in needs]
        heads: list[tuple[Key, Class]] = []
        for number, heap in self._classes.items():
            if all(c >= w for c, w in zip(number, wanted, strict=True)) and self._top(number):
                heads.append((heap[0][0], number))
        heapq.heapify(heads)
        taken: list[tuple[Class, tuple[Key, str]]] = []
        try:
            while heads:
                _, number = heapq.heappop(heads)
                heap = self._classes[number]
                entry = heapq.heappop(heap)
                taken.append((number, entry))
                yield entry[1]
                if self._top(number):
                    heapq.heappush(heads, (heap[0][0], number))
        finally:
            for number, entry in taken:
                if self._filed.get(entry[1]) == (number, entry[0]):
                    heapq.heappush(self._classes[number], entry)

    def _top(self, number: Class) -> bool:
        """Drop the class's stale entries from its top; whether a live one is left."""
        heap = self._classes[number]
        while heap:
            key, machine_id = heap[0]
            if self._filed.get(machine_id) == (number, key):
                return True
            heapq.heappop(heap)
        return False
