"""The one follower: a snapshot, then the watch from its revision, folded into one ClusterView.

Every long reader of the registry — the engine, the agent, the API's waits and event stream,
`Registry.wait_for`, `observe_leader` — follows it the same way, written here once: list
everything at one revision (retried with backoff while etcd is unreachable), watch from the
next revision (the `EventStream` resumes across disconnects and relists after a compaction),
fold each batch of events into the view, and hand the reader one `Update` per batch that
changed something: the view, the events that changed it, and the units they may concern.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass

from fleetd.registry.fold import ClusterView, Event, Resync, Snapshot, touched
from fleetd.registry.watch import EventStream, retry_unavailable

__all__ = ["Update", "fold_events", "follow"]


@dataclass(frozen=True, slots=True)
class Update:
    """What one step of following brought.

    `view` is the follower's ClusterView, current after `events` (it is mutated in place by the
    next step: freeze it to keep it). The first update is the snapshot itself (`events` empty);
    later ones carry the events of one watch batch that changed the view — an event that
    changed nothing (a document written again unchanged, the echo of a write the reader already
    recorded in the view) is not among them, and a batch of only such events gives no update.
    `units`: the units the events are about (a content's: the jobs using it);
    `machines`: a machine came, went or changed metadata (many units may be placed elsewhere);
    `everything`: the view was replaced (the start, a resync)."""

    view: ClusterView
    events: tuple[Event, ...]
    units: frozenset[str] = frozenset()
    machines: bool = False
    everything: bool = False

    @property
    def touched(self) -> frozenset[str] | None:
        """The units whose view may have changed; None for "any"."""
        return None if self.everything or self.machines else self.units


async def follow(
    snapshot: Callable[[], Awaitable[Snapshot]],
    watch: Callable[[int], EventStream],
    *,
    start: Snapshot | None = None,
    view: ClusterView | None = None,
) -> AsyncIterator[Update]:
    """Follow the registry: `start` (or a fresh `snapshot()`, retried while etcd is
    unreachable), then `watch(revision + 1)`. `view`: fold into this view (a subclass, or one
    the caller already holds) instead of a new one. Ends only when the consumer stops."""
    if start is None:
        start = await retry_unavailable(snapshot, "registry.snapshot_retry")
    if view is None:
        view = ClusterView(start)
    else:
        view.reset(start)
    yield Update(view, (), everything=True)
    async with aclosing(watch(start.revision + 1)) as stream:
        async for batch in stream.batches():
            update = fold_events(view, batch)
            if update is not None:
                yield update


def fold_events(view: ClusterView, events: Iterable[Event]) -> Update | None:
    """Fold a batch of events into `view`: the Update of those that changed it, or None."""
    changed: list[Event] = []
    units: set[str] = set()
    machines = everything = False
    for event in events:
        if not view.apply(event):
            continue  # (a content written again for its next users, say)
        about = touched(view, event)
        changed.append(event)
        if isinstance(event, Resync):
            everything = True
        elif about is None:
            machines = True
        else:
            units |= about
    if not changed:
        return None
    return Update(view, tuple(changed), frozenset(units), machines, everything)
