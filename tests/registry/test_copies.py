"""One machine's copies read as the records (`LocalCopies`): a table of events in, events out.
Pure: no etcd."""

from __future__ import annotations

import pytest

from fleetd.model import (
    Assignment,
    GlobalJob,
    Job,
    JobState,
    Machine,
    Placement,
    RestartRequest,
)
from fleetd.registry.copies import LocalCopies
from fleetd.registry.fold import Changed, Removed
from fleetd.registry.keys import KeyKind

L, R = JobState.LAUNCHED, JobState.LOADED
PLACED, GLOBAL, JOB, SCHEDULE = KeyKind.PLACED, KeyKind.GLOBAL, KeyKind.JOB, KeyKind.SCHEDULE


def a(name: str, machine: str = "me", desired: JobState = L) -> Assignment:
    return Assignment(name, machine, "h1", desired)


def g(name: str, desired: JobState = L) -> GlobalJob:
    return GlobalJob(name, "h2", desired)


def copies(*docs) -> LocalCopies:
    c = LocalCopies("me")
    c.reset(docs)
    return c


CASES = {
    "placed here: the job and the placement": (
        copies(),
        Changed(5, PLACED, ("me", "a.service"), a("a.service")),
        [Changed(5, JOB, "a.service", Job("a.service", "h1", L)),
         Changed(5, SCHEDULE, "a.service", Placement("a.service", "me"))],
    ),
    "placed elsewhere (not in this range): nothing": (
        copies(),
        Changed(5, PLACED, ("other", "a.service"), a("a.service", "other")),
        [],
    ),
    "its copy gone: the placement and the job go": (
        copies(a("a.service")),
        Removed(6, PLACED, ("me", "a.service")),
        [Removed(6, SCHEDULE, "a.service"), Removed(6, JOB, "a.service")],
    ),
    "a copy gone that was never read: nothing": (
        copies(),
        Removed(6, PLACED, ("me", "a.service")),
        [],
    ),
    "a Global job: the job": (
        copies(),
        Changed(5, GLOBAL, "w.service", g("w.service")),
        [Changed(5, JOB, "w.service", Job("w.service", "h2", L))],
    ),
    "a Global job also placed here: the placed one is its job meanwhile": (
        copies(a("w.service")),
        Changed(5, GLOBAL, "w.service", g("w.service")),
        [],
    ),
    "the placed copy of a Global job goes: the Global one is its job again": (
        copies(a("w.service"), g("w.service")),
        Removed(6, PLACED, ("me", "w.service")),
        [Removed(6, SCHEDULE, "w.service"),
         Changed(6, JOB, "w.service", Job("w.service", "h2", L))],
    ),
    "a Global job gone": (
        copies(g("w.service")),
        Removed(6, GLOBAL, "w.service"),
        [Removed(6, JOB, "w.service")],
    ),
    "a Global job gone that is still placed here: nothing yet": (
        copies(a("w.service"), g("w.service")),
        Removed(6, GLOBAL, "w.service"),
        [],
    ),
    "a restart request of another machine: dropped": (
        copies(),
        Changed(5, KeyKind.RESTART, ("a.service", "other"),
                RestartRequest("a.service", "other", "t")),
        [],
    ),
    "a restart request here: as it is": (
        copies(),
        Changed(5, KeyKind.RESTART, ("a.service", "me"), RestartRequest("a.service", "me", "t")),
        [Changed(5, KeyKind.RESTART, ("a.service", "me"),
                 RestartRequest("a.service", "me", "t"))],
    ),
    "its machine: as it is": (
        copies(),
        Changed(5, KeyKind.MACHINE, "me", Machine("me")),
        [Changed(5, KeyKind.MACHINE, "me", Machine("me"))],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", CASES)
def test_translate(name: str) -> None:
    local, event, expected = CASES[name]
    assert local.translate(event) == expected


def test_reset_gives_the_records_of_a_listing() -> None:
    local = LocalCopies("me")
    records = local.reset(
        [
            a("a.service", desired=R),
            a("x.service", "other"),  # not this machine's (written by hand): left out
            g("w.service"),
            a("v.service"),
            g("v.service", R),  # placed here and Global: the placed copy is the job
            RestartRequest("a.service", "me", "t"),
            RestartRequest("a.service", "other", "u"),
            Machine("me"),
        ]
    )
    assert sorted(map(repr, records)) == sorted(
        map(
            repr,
            [
                RestartRequest("a.service", "me", "t"),
                Machine("me"),
                Job("a.service", "h1", R),
                Placement("a.service", "me"),
                Job("v.service", "h1", L),
                Placement("v.service", "me"),
                Job("w.service", "h2", L),
            ],
        )
    )
    assert local.names == {"a.service", "v.service", "w.service"}
