"""Links and unlinks made known to systemd in batches, each with one `Reload`.

A Reload makes systemd re-read every unit file, so a hundred concurrent loads must not cost a
hundred of them. The first caller creates a batch and schedules its flush; every caller arriving
before the flush runs joins it and awaits the same future. The flush does
`DisableUnitFiles(runtime)`, `LinkUnitFiles(runtime, force)` and one `Reload` — unless it only
links files systemd never loaded (new units): systemd (since 247) finds a unit file linked
after its last reload when the unit is first asked for, so a burst of new units costs no
reload at all (`systemctl link --no-reload` + `start`); a file written over one systemd may
have loaded, or an unlink, needs the Reload. Batches are
serialized by a lock, so links arriving during a reload go into the next one, never into a
reload that already missed them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from fleetd.systemd.dbus import SystemdBus

__all__ = ["Reloads"]

log = structlog.get_logger(__name__)


@dataclass
class _Batch:
    """Links and unlinks that share one Reload."""

    link: dict[str, Path] = field(default_factory=dict)
    unlink: set[str] = field(default_factory=set)
    reload: bool = False  # some link replaces a file systemd may have loaded
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Reloads:
    """The batches of one manager. `bus` gives the connected bus or raises BusUnavailable;
    `reloaded(bus, linked)` runs after each successful reload, still under the lock, so the
    states of the files just linked are read before the next batch changes them."""

    def __init__(
        self,
        bus: Callable[[], SystemdBus],
        reloaded: Callable[[SystemdBus, Iterable[str]], Awaitable[None]],
    ) -> None:
        self.count = 0  # Reload calls made (coalescing is visible here)
        self._bus = bus
        self._reloaded = reloaded
        self._batch: _Batch | None = None
        self._lock = asyncio.Lock()
        self._flushes: set[asyncio.Task[None]] = set()

    async def join(
        self,
        link: Mapping[str, Path] | None = None,
        unlink: set[str] | None = None,
        *,
        reload: bool = True,
    ) -> None:
        """Link `link` (name → path) and unlink `unlink` in the next batch, and wait for it.
        `reload=False`: the links are of files systemd never loaded (no Reload needed for
        them)."""
        if self._batch is None:
            self._batch = _Batch()
            task = asyncio.create_task(self._flush(), name="systemd-reload")
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        batch = self._batch
        batch.reload = batch.reload or reload or bool(unlink)
        for name, path in (link or {}).items():
            batch.unlink.discard(name)
            batch.link[name] = path
        for name in unlink or ():
            batch.link.pop(name, None)
            batch.unlink.add(name)
        await asyncio.shield(batch.done)

    def pending(self) -> list[asyncio.Task[None]]:
        """The flushes still running (awaited on close)."""
        return list(self._flushes)

    async def _flush(self) -> None:
        async with self._lock:
            batch, self._batch = self._batch, None
            assert batch is not None
            try:
                bus = self._bus()
                if batch.unlink:
                    await bus.call(
                        "DisableUnitFiles", "asb", [sorted(batch.unlink), True], queued=False
                    )
                if batch.link:
                    await bus.call(
                        "LinkUnitFiles",
                        "asbb",
                        [[str(p) for _, p in sorted(batch.link.items())], True, True],
                        queued=False,
                    )
                if batch.reload:
                    self.count += 1
                    await bus.call("Reload", queued=False)
            except Exception as exc:
                batch.done.set_exception(exc)
                batch.done.exception()  # retrieved: each caller re-raises it from the shield
                return
            log.info(
                "systemd.reloaded" if batch.reload else "systemd.linked",
                linked=len(batch.link),
                unlinked=len(batch.unlink),
            )
            batch.done.set_result(None)
            await self._reloaded(bus, batch.link)
