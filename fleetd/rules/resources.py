"""`MemoryReservation=` and `CPUReservation=`: what the unit needs of its machine (hard).

When absent, what systemd will enforce is what is reserved: the unit's own `[Service]`
`MemoryMax=` (or the older `MemoryLimit=`) and `CPUQuota=` (`200%` is 2 CPUs); a percentage of
memory or `infinity` reserves nothing. A machine offers what fleetd measured of it
(`fleet.memory`, `fleet.cpus`) less what its operator holds back for the host
(`fleet.memory-reserved`, `fleet.cpus-reserved`); a machine that allows overcommit
(`fleet.overcommit=true`) takes any unit. A unit fits when the reservations of the units
already there (placed, and Global units running there), those placed earlier in the same plan
and its own add up to no more than that. A machine that does not say what it offers takes no
unit that reserves.

A unit running where it was placed, with the content it was placed with, is never moved for
room: a machine whose capacity shrank (fleetd restarted in a smaller cgroup) is reported
over-committed, not emptied. A unit whose reservation changed (`--replace`) is checked again
until its machine runs the new content.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from fleetd.rules.base import (
    Capacity,
    Options,
    Placing,
    Rejection,
    RejectReason,
    Rule,
    Term,
    UnitValidationError,
)
from fleetd.rules.metadata import RESERVED_PREFIX
from fleetd.rules.sizes import cpus, size
from fleetd.unit_names import UnitName

__all__ = [
    "CPUS",
    "MEMORY",
    "RULE",
    "Reservation",
    "Shortage",
    "capacity_of",
    "host_policy",
    "show_size",
]

EPSILON = 1e-9  # CPUs add up as floats
# The facts a machine's capacity is read from, published by its fleetd: measured
# (`fleetd.facts`), and its operator's policy (`host_policy`).
MEMORY, CPUS = f"{RESERVED_PREFIX}memory", f"{RESERVED_PREFIX}cpus"
MEMORY_RESERVED, CPUS_RESERVED = (
    f"{RESERVED_PREFIX}memory-reserved",
    f"{RESERVED_PREFIX}cpus-reserved",
)
OVERCOMMIT = f"{RESERVED_PREFIX}overcommit"


def host_policy(reserved_memory: int, reserved_cpus: float, overcommit: bool) -> dict[str, str]:
    """The facts a fleetd publishes of its configuration (`reserved_memory`, `reserved_cpu`,
    `overcommit` in fleet.conf): what it holds back for the host, and whether it takes units
    beyond what it offers. Nothing for the defaults."""
    facts = {}
    if reserved_memory:
        facts[MEMORY_RESERVED] = str(reserved_memory)
    if reserved_cpus:
        facts[CPUS_RESERVED] = f"{reserved_cpus:g}"
    if overcommit:
        facts[OVERCOMMIT] = "true"
    return facts


def capacity_of(metadata: Mapping[str, str]) -> Capacity:
    """A machine's capacity from its facts: measured, less what is held back for the host."""
    memory = size(metadata.get(MEMORY, ""))
    held_memory = size(metadata.get(MEMORY_RESERVED, "")) or 0
    count = cpus(metadata.get(CPUS, ""))
    held_cpus = cpus(metadata.get(CPUS_RESERVED, "")) or 0.0
    return Capacity(
        None if memory is None else max(memory - held_memory, 0),
        None if count is None else max(count - held_cpus, 0.0),
        metadata.get(OVERCOMMIT, "").lower() == "true",
    )


def show_size(n: float) -> str:
    """Bytes as systemd would write them, to one decimal (`512M`, `1.5G`)."""
    for suffix, unit in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= unit:
            return f"{n / unit:.1f}".removesuffix(".0") + suffix
    return f"{int(n)}B"


def _show(dimension: str, amount: float) -> str:
    return show_size(amount) if dimension == "memory" else f"{amount:g}"


@dataclass(frozen=True, slots=True)
class Shortage:
    """The subject of a refusal: the dimension short, what is free there (None: the machine
    does not say what it offers), what the unit needs."""

    dimension: str  # "memory" or "cpu"
    free: float | None
    need: float


@dataclass(frozen=True, slots=True)
class Reservation(Term):
    rule: ClassVar[str] = "Reservation"
    memory: int  # bytes
    cpus: float
    source: str  # the options it was read from, as written

    @property
    def reserves(self) -> tuple[int, float]:
        return self.memory, self.cpus

    def check(self, job: str, machine_id: str, view: Placing) -> Rejection | None:
        if view.settled(job, machine_id):
            return None  # running there with this content: never moved for room
        here = view.placement(job) == machine_id
        capacity = view.capacity(machine_id)
        if capacity.overcommit:
            return None
        used_memory, used_cpus = view.reserved_on(machine_id)
        if here:  # itself, re-checked where it is placed
            used_memory, used_cpus = used_memory - self.memory, used_cpus - self.cpus
        for dimension, need, used, offered in (
            ("memory", self.memory, used_memory, capacity.memory),
            ("cpu", self.cpus, used_cpus, capacity.cpus),
        ):
            if need <= 0:
                continue
            if offered is None:
                return Rejection(
                    machine_id, RejectReason.RESOURCES, self, Shortage(dimension, None, need)
                )
            if used + need > offered + EPSILON:
                free = max(offered - used, 0)
                return Rejection(
                    machine_id, RejectReason.RESOURCES, self, Shortage(dimension, free, need)
                )
        return None

    def seen(self, job: str, machine_id: str, view: Placing) -> str:
        capacity = view.capacity(machine_id)
        if capacity.overcommit:
            return "the machine allows overcommit"
        used_memory, used_cpus = view.reserved_on(machine_id)
        parts = []
        if self.memory and capacity.memory is not None:
            parts.append(
                f"memory {show_size(used_memory)} of {show_size(capacity.memory)} reserved"
            )
        if self.cpus and capacity.cpus is not None:
            parts.append(f"cpu {used_cpus:g} of {capacity.cpus:g} reserved")
        return ", ".join(parts)

    def __str__(self) -> str:
        return self.source

    def text(self, rejection: Rejection) -> str:
        s = rejection.subject
        assert isinstance(s, Shortage)
        if s.free is None:
            return f"{s.dimension} unknown (the machine does not say what it offers)"
        return f"{s.dimension} exhausted"

    def heading(self, rejection: Rejection) -> str:
        s = rejection.subject
        assert isinstance(s, Shortage)
        return f"{self.source}: {s.dimension}"

    def detail(self, rejection: Rejection) -> str:
        s = rejection.subject
        assert isinstance(s, Shortage)
        if s.free is None:
            return f"no {MEMORY if s.dimension == 'memory' else CPUS}"
        return f"{_show(s.dimension, s.free)} free, {_show(s.dimension, s.need)} needed"


def _last(options: Options, name: str) -> str | None:
    values = options.get(name, ())
    return values[-1] if values else None  # the last one wins, as systemd reads settings


def _parse(options: Options, name: UnitName | None) -> Reservation | None:
    sources: list[str] = []
    memory_text = _last(options, "MemoryReservation")
    if memory_text is not None:
        memory = size(memory_text)
        if memory is None:
            raise UnitValidationError(
                f"MemoryReservation={memory_text}: not a size (bytes, or with K, M, G, T: 512M)"
            )
        sources.append(f"MemoryReservation={memory_text}")
    else:  # what systemd enforces: MemoryMax=, else MemoryLimit= (a percentage reserves nothing)
        memory = 0
        for option in ("Service.MemoryMax", "Service.MemoryLimit"):
            text = _last(options, option)
            if text and (found := size(text)) is not None:
                memory = found
                sources.append(f"{option.removeprefix('Service.')}={text}")
                break
    cpu_text = _last(options, "CPUReservation")
    if cpu_text is not None:
        count = cpus(cpu_text)
        if count is None:
            raise UnitValidationError(f"CPUReservation={cpu_text}: not a number of CPUs (1, 1.5)")
        sources.append(f"CPUReservation={cpu_text}")
    else:
        quota = _last(options, "Service.CPUQuota")
        count = (cpus(quota, percent=True) or 0.0) if quota else 0.0
        if count:
            sources.append(f"CPUQuota={quota}")
    if not memory and not count:
        return None
    return Reservation(memory, count, " ".join(sources))


RULE = Rule(
    "Reservation",
    ("MemoryReservation", "CPUReservation"),
    _parse,
    reads=("Service.MemoryMax", "Service.MemoryLimit", "Service.CPUQuota"),
)
