"""`systemctl status` text of a unit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

import structlog

from fleetd.errors import TemporaryError

Wrapper = Callable[[Sequence[str]], list[str]]

log = structlog.get_logger(__name__)


def status_argv(unit: str, *, user: bool, lines: int = 10) -> list[str]:
    return [
        "systemctl",
        *(["--user"] if user else []),
        "status",
        "--no-pager",
        "--full",
        "--lines",
        str(lines),
        "--",
        unit,
    ]


async def unit_status(
    unit: str,
    *,
    user: bool = False,
    lines: int = 10,
    wrap: Wrapper | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """The text `systemctl status UNIT` prints (whatever the unit's state; exit codes 3 and 4
    only say it is not running or not found, and the text says so too)."""
    argv = status_argv(unit, user=user, lines=lines)
    for attempt in (1, 2):
        try:
            proc = await asyncio.create_subprocess_exec(
                *(wrap(argv) if wrap else argv),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=dict(env) if env is not None else None,
            )
        except OSError as exc:
            raise TemporaryError(f"cannot run systemctl: {exc}") from exc
        out, err = await proc.communicate()
        text = out.decode("utf-8", "replace")
        if proc.returncode not in (0, 3) or not text:
            text += err.decode("utf-8", "replace")
        if text:
            return text
        # Seen rarely right after a unit started: systemctl printed nothing at all. A safety
        # net, not a poll: run it once more, then say so instead of answering nothing.
        log.warning("systemd.status_empty", unit=unit, exit_code=proc.returncode, attempt=attempt)
    raise TemporaryError(f"systemctl status {unit} printed nothing (exit {proc.returncode})")
