"""A unit's journal: `journalctl` as a subprocess, streamed line by line as an async iterator.

`async with JournalStream(...) as lines: async for line in lines: ...`; leaving the block, or
cancelling the task reading it, terminates the child and reaps it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence

import structlog

from fleetd.errors import TemporaryError

log = structlog.get_logger(__name__)

Wrapper = Callable[[Sequence[str]], list[str]]


def journal_argv(unit: str, *, lines: int | None = None, follow: bool = False) -> list[str]:
    argv = ["journalctl", "--unit", unit, "--no-pager", "--quiet", "--output", "short"]
    if lines is not None:
        argv += ["--lines", str(lines)]
    if follow:
        argv.append("--follow")
    return argv


# journald writes what it receives asynchronously: `journalctl --sync` makes it write all it has
# received first, so the last lines of a unit that just failed (the error it printed, systemd's
# "Failed at step EXEC") are there to read. Best effort: without the right to ask, or when
# journald does not answer in time, the journal is read as it is.
SYNC_TIMEOUT = 2.0


class JournalStream:
    """The journal lines of one unit (`lines=N` last lines; `follow=True` keeps streaming)."""

    def __init__(
        self,
        unit: str,
        *,
        lines: int | None = None,
        follow: bool = False,
        wrap: Wrapper | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.unit = unit
        argv = journal_argv(unit, lines=lines, follow=follow)
        self.argv = wrap(argv) if wrap else argv
        sync = ["journalctl", "--sync"]
        self.sync_argv = wrap(sync) if wrap else sync
        self._env = dict(env) if env is not None else None
        self.proc: asyncio.subprocess.Process | None = None
        self._closed = False

    async def _sync(self) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.sync_argv, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                env=self._env,
            )
        except OSError as exc:
            log.debug("systemd.journal_sync_failed", unit=self.unit, error=str(exc))
            return
        try:
            await asyncio.wait_for(proc.wait(), SYNC_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if proc.returncode:
            log.debug("systemd.journal_sync_failed", unit=self.unit, status=proc.returncode)

    async def open(self) -> JournalStream:
        await self._sync()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL, env=self._env,
            )
        except OSError as exc:
            raise TemporaryError(f"cannot run journalctl: {exc}") from exc
        log.debug("systemd.journal_opened", unit=self.unit, pid=self.proc.pid)
        return self

    async def __aenter__(self) -> JournalStream:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> JournalStream:
        return self

    async def __anext__(self) -> str:
        if self.proc is None:
            await self.open()
        assert self.proc is not None and self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            await self.aclose()
            raise StopAsyncIteration
        return line.decode("utf-8", "replace").rstrip("\n")

    async def aclose(self) -> None:
        """Terminate journalctl (if still running) and reap it."""
        proc = self.proc
        if proc is None or self._closed:
            return
        self._closed = True
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        # Reap even when the caller is being cancelled: shield the wait, then re-raise.
        waiter = asyncio.ensure_future(proc.wait())
        try:
            await asyncio.shield(waiter)
        except asyncio.CancelledError:
            await waiter
            raise
        log.debug("systemd.journal_closed", unit=self.unit, pid=proc.pid)
