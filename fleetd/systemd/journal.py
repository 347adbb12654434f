"""A unit's journal: `journalctl` as a subprocess, streamed line by line as an async iterator.

`async with JournalStream(...) as lines: async for line in lines: ...`; leaving the block, or
cancelling the task reading it, terminates the child and reaps it.

Following never starts from the journal's tail. journalctl 252 (Debian 12) loses entries when
`--follow --lines N` starts while the unit has no entries yet (a unit just started, a fresh
machine): it seeks to the tail, finds nothing to step back to, and then skips the first entries
appended after it (measured: 1 to 3 of the first 5 lines, never shown; a unit that prints once and
then waits is never shown at all). So a follow is two runs: the unit's last lines with the cursor
of the last one (`--show-cursor`), then `--follow --after-cursor` that cursor, or, when the unit
had no entry yet, `--follow --no-tail` from the head (all of its entries are new then). Every
entry written after the lines shown comes exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence

import structlog

from fleetd.errors import TemporaryError

log = structlog.get_logger(__name__)

Wrapper = Callable[[Sequence[str]], list[str]]

_CURSOR = "-- cursor: "
_FOLLOW_LINES = 10  # journalctl --follow's own default

# journald writes what it receives asynchronously: `journalctl --sync` makes it write all it has
# received first, so the last lines of a unit that just failed (the error it printed, systemd's
# "Failed at step EXEC") are there to read. Best effort: without the right to ask, or when
# journald does not answer in time, the journal is read as it is (logged). 2 s again: the empty
# failure reports the 10 s bound was meant for were journalctl children killed before their
# exec (see fleetd/registry/etcd.py), never a slow sync (no `systemd.journal_sync_slow` in any).
SYNC_TIMEOUT = 2.0


def journal_argv(
    unit: str | None,
    *,
    lines: int | None = None,
    follow: bool = False,
    after_cursor: str | None = None,
    show_cursor: bool = False,
    no_tail: bool = False,
) -> list[str]:
    """journalctl's argv for `unit` (None: every entry of the journal). A bare `follow` starts
    from the tail, which can lose entries (see the module's docstring): JournalStream follows
    `after_cursor`, or from the head (`no_tail`)."""
    argv = ["journalctl", "--no-pager", "--quiet", "--output", "short"]
    if lines is not None:
        argv += ["--lines", str(lines)]
    if show_cursor:
        argv.append("--show-cursor")
    if after_cursor is not None:
        argv.append(f"--after-cursor={after_cursor}")
    if follow:
        argv.append("--follow")
    if no_tail:
        argv.append("--no-tail")
    if unit is not None:
        argv += unit_matches(unit)
    return argv


# The fields that tie an entry to a unit. `--unit` matches the sender's cgroup (_SYSTEMD_UNIT),
# which journald reads from /proc when it processes the entry: the lines of a process that has
# exited by then (the forked child's "Failed at step EXEC spawning /usr/bin/docker", written just
# before it exits with 203) lose it and only carry the unit in UNIT= (a system manager's child)
# or USER_UNIT= (a user manager's). So the entries of a unit are any that name it in one of them.
_UNIT_FIELDS = ("_SYSTEMD_UNIT", "_SYSTEMD_USER_UNIT", "UNIT", "USER_UNIT", "OBJECT_SYSTEMD_UNIT",
                "COREDUMP_UNIT")  # fmt: skip


def unit_matches(unit: str) -> list[str]:
    """journalctl matches for the entries of `unit`: `F1=unit + F2=unit + ...` (any of them)."""
    matches: list[str] = []
    for field in _UNIT_FIELDS:
        matches += ["+", f"{field}={unit}"] if matches else [f"{field}={unit}"]
    return matches


def split_cursor(lines: list[str]) -> tuple[list[str], str | None]:
    """`--show-cursor` output: the entries' lines, and the cursor after them (None: no entry)."""
    if lines and lines[-1].startswith(_CURSOR):
        return lines[:-1], lines[-1][len(_CURSOR) :].strip() or None
    return lines, None


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
        self.lines = lines
        self.follow = follow
        self._wrap = wrap
        self._env = dict(env) if env is not None else None
        self.proc: asyncio.subprocess.Process | None = None  # the journalctl streaming lines
        self._proc_argv: list[str] = []  # its argv, for the log
        self._backlog: deque[str] = deque()  # the last lines of a follow, shown first
        self._closed = False

    def _argv(self, argv: list[str]) -> list[str]:
        return self._wrap(argv) if self._wrap else argv

    async def _sync(self) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv(["journalctl", "--sync"]),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                env=self._env,
            )
        except OSError as exc:
            log.debug("systemd.journal_sync_failed", unit=self.unit, error=str(exc))
            return
        try:
            await asyncio.wait_for(proc.wait(), SYNC_TIMEOUT)
        except TimeoutError:
            log.warning("systemd.journal_sync_slow", unit=self.unit, waited=SYNC_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if proc.returncode:
            log.debug("systemd.journal_sync_failed", unit=self.unit, status=proc.returncode)

    async def _spawn(
        self, argv: list[str], stderr: int = asyncio.subprocess.DEVNULL
    ) -> asyncio.subprocess.Process:
        try:
            return await asyncio.create_subprocess_exec(
                *self._argv(argv),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                env=self._env,
            )
        except OSError as exc:
            raise TemporaryError(f"cannot run journalctl: {exc}") from exc

    def _ended(
        self, proc: asyncio.subprocess.Process, argv: list[str], error: bytes | None = None
    ) -> None:
        """Log a journalctl that was killed or failed: what it should have shown is missing (a
        child killed by a signal before its exec once showed as an empty journal). With
        `--show-cursor` it exits 1, saying nothing (`--quiet`), when the unit has no entry yet:
        that is no failure. `error` is its stderr, when it was read."""
        status = proc.returncode or 0
        if not status or (status == 1 and error is not None and not error.strip()):
            return
        log.warning(
            "systemd.journalctl_failed", unit=self.unit, pid=proc.pid, status=status, argv=argv,
            error=(error or b"").decode("utf-8", "replace").strip()[-500:],
        )  # fmt: skip

    async def _output(self, argv: list[str]) -> list[str]:
        """Run journalctl to its end: its output lines (reaped even when cancelled)."""
        proc = await self._spawn(argv, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await proc.communicate()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
            raise
        self._ended(proc, argv, err)
        return out.decode("utf-8", "replace").splitlines()

    async def _follow_argv(self) -> list[str]:
        """Read the unit's last lines into the backlog; the argv following on from them."""
        lines = _FOLLOW_LINES if self.lines is None else self.lines
        # at least one line: its cursor is where the follow goes on (with --lines 0 too)
        shown, cursor = split_cursor(
            await self._output(journal_argv(self.unit, lines=max(lines, 1), show_cursor=True))
        )
        if lines:
            self._backlog.extend(shown)
        # after the unit's last entry (a cursor of the unit's own: journalctl skips one entry
        # after a cursor its filter does not match), or from the head when it had none yet
        return journal_argv(self.unit, follow=True, after_cursor=cursor, no_tail=True)

    async def open(self) -> JournalStream:
        await self._sync()
        argv = (
            await self._follow_argv() if self.follow else journal_argv(self.unit, lines=self.lines)
        )
        self.proc = await self._spawn(argv)
        self._proc_argv = argv
        log.debug("systemd.journal_opened", unit=self.unit, pid=self.proc.pid, argv=argv)
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
        if self._backlog:
            return self._backlog.popleft()
        assert self.proc is not None and self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:  # journalctl closed its output: it is exiting (a follow only if it failed)
            await self.proc.wait()
            self._ended(self.proc, self._proc_argv)
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
