"""`systemctl status` text of a unit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

from fleetd.errors import TemporaryError

Wrapper = Callable[[Sequence[str]], list[str]]


def status_argv(unit: str, *, user: bool, lines: int = 10) -> list[str]:
    return [
        "systemctl", *(["--user"] if user else []), "status", "--no-pager", "--full",
        "--lines", str(lines), "--", unit,
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
    try:
        proc = await asyncio.create_subprocess_exec(
            *(wrap(argv) if wrap else argv), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=dict(env) if env is not None else None,
        )
    except OSError as exc:
        raise TemporaryError(f"cannot run systemctl: {exc}") from exc
    out, err = await proc.communicate()
    text = out.decode("utf-8", "replace")
    if proc.returncode not in (0, 3) or not text:
        text += err.decode("utf-8", "replace")
    return text
