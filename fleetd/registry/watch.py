"""Resumable, typed watch streams over the registry prefix.

`EventStream` is pull-based: it reads the next etcd response only when the consumer asks for the
next event, so a slow consumer holds at most one response batch in memory (gRPC flow control
holds the rest at the server). It remembers the revision of the last batch it delivered and, when
the stream breaks (etcd restarted, unreachable, the library re-created the stream), resumes from
that revision + 1 after a capped backoff; events at or below it are dropped, so none is lost or
duplicated. When etcd has compacted the revision to resume from, it logs
`registry.watch_compacted`, relists, yields `Resync(snapshot)` and continues after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import TypeVar

import structlog

from fleetd.model import ModelError
from fleetd.registry.errors import EtcdUnavailable, WatchCompacted, WatchInterrupted
from fleetd.registry.etcd import EtcdClient
from fleetd.registry.fold import Change, DecodedEvents, Event, Resync, Snapshot
from fleetd.registry.keys import KeyKind, KeyLayout

__all__ = ["Backoff", "EventStream", "retry_unavailable"]

log = structlog.get_logger(__name__)


class Backoff:
    """Capped exponential backoff with jitter, for retrying an unavailable etcd."""

    def __init__(self, first: float = 0.05, cap: float = 2.0) -> None:
        self.first, self.cap = first, cap
        self.delay = first

    def reset(self) -> None:
        self.delay = self.first

    async def wait(self) -> None:
        await asyncio.sleep(self.delay * random.uniform(0.5, 1.0))  # jitter
        self.delay = min(self.delay * 2, self.cap)


T = TypeVar("T")


async def retry_unavailable(
    make: Callable[[], Awaitable[T]],
    what: str,
    *,
    backoff: Backoff | None = None,
    **log_fields: object,
) -> T:
    """`await make()` until etcd answers. Unavailability is temporary: each `EtcdUnavailable`
    is logged as the warning event `what` (with `log_fields` and the error) and retried after
    `backoff` (default: 0.1 s doubling up to 2 s); any other error is the caller's."""
    backoff = backoff if backoff is not None else Backoff(first=0.1, cap=2.0)
    while True:
        try:
            return await make()
        except EtcdUnavailable as err:
            log.warning(what, error=str(err), **log_fields)
            await backoff.wait()


class EventStream:
    """Async iterator of registry events from a revision; `async with` closes the stream.

    It needs the etcd adapter, the key layout (to decode) and a way to list everything again
    (`relist`, after a compaction) — not the Registry. `batches()` gives the events of each
    etcd response together (one transaction's events are never split), for readers that fold a
    burst before they act."""

    def __init__(
        self,
        etcd: EtcdClient,
        layout: KeyLayout,
        relist: Callable[[], Awaitable[Snapshot]],
        from_revision: int,
        *,
        key: str | None = None,
        prefix: bool = True,
        ranges: Sequence[tuple[str, bool]] = (),
        skip: frozenset[KeyKind] = frozenset(),
        decoded: DecodedEvents | None = None,
    ) -> None:
        """`key` (default: the whole layout; `prefix=False`: that one key only), or `ranges`,
        several (key, whether a prefix): watched on one stream, each resumed from its own
        last revision (a transaction over several ranges may then come in several batches).
        `skip`: kinds of keys dropped undecoded. `decoded`: the events the process's other
        watchers decoded already (shared: each change is decoded once)."""
        if from_revision < 1:
            raise ValueError("a watch starts at revision 1 or later (snapshot().revision + 1)")
        self._etcd, self._layout, self._relist_now = etcd, layout, relist
        self._ranges = list(ranges) or [(key or layout.prefix, prefix)]
        self._skip = skip  # kinds of keys dropped undecoded
        self._decoded = decoded if decoded is not None else DecodedEvents(size=0)
        # per range, the first revision not yet fully delivered
        self._next = [from_revision] * len(self._ranges)
        self.resyncs = 0
        self.reconnects = 0
        self._gen = self._run()
        self._pending: deque[Event] = deque()

    @property
    def next_revision(self) -> int:
        """The first revision not yet fully delivered (of the range furthest behind)."""
        return min(self._next)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while not self._pending:
            self._pending.extend(await self._gen.__anext__())
        return self._pending.popleft()

    def batches(self) -> AsyncIterator[list[Event]]:
        """The events batch by batch (each non-empty), instead of one by one."""
        return self._gen

    async def aclose(self) -> None:
        await self._gen.aclose()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self) -> AsyncIterator[list[Event]]:
        etcd = self._etcd
        backoff = Backoff()
        while True:
            starts = list(self._next)
            asked = [
                (key, prefix, start)
                for (key, prefix), start in zip(self._ranges, starts, strict=True)
            ]
            try:
                async with contextlib.aclosing(etcd.watch_ranges(asked)) as batches:
                    async for index, batch in batches:
                        backoff.reset()
                        events = self._decode(batch.changes, starts[index])
                        if events:
                            yield events
                        last = max(c.revision for c in batch.changes)
                        self._next[index] = max(self._next[index], last + 1)
            except WatchInterrupted as err:
                self.reconnects += 1
                log.info(
                    "registry.watch_resuming", from_revision=self.next_revision, reason=str(err)
                )
                await backoff.wait()
            except EtcdUnavailable as err:
                log.warning(
                    "registry.watch_unavailable", from_revision=self.next_revision, error=str(err)
                )
                await backoff.wait()
            except WatchCompacted as err:
                log.warning(
                    "registry.watch_compacted",
                    from_revision=self.next_revision,
                    compact_revision=err.compact_revision,
                    action="relist and resync",
                )
                snapshot = await self._relist(backoff)
                self.resyncs += 1
                self._next = [snapshot.revision + 1] * len(self._ranges)
                yield [Resync(snapshot.revision, snapshot)]

    def _decode(self, changes: tuple[Change, ...], start: int) -> list[Event]:
        """Typed events of one batch; drops changes already delivered and corrupt values."""
        layout, skip, decode = self._layout, self._skip, self._decoded.decode
        events: list[Event] = []
        for change in changes:
            if change.revision < start:
                continue  # already delivered before a reconnect
            try:
                event = decode(layout, change, skip)
            except ModelError as err:
                log.warning(
                    "registry.corrupt_value",
                    key=change.key,
                    revision=change.revision,
                    error=str(err),
                )
                continue
            if event is not None:
                events.append(event)
        return events

    async def _relist(self, backoff: Backoff) -> Snapshot:
        while True:
            try:
                return await self._relist_now()
            except (EtcdUnavailable, WatchCompacted) as err:
                log.warning("registry.relist_retry", error=str(err))
                await backoff.wait()
