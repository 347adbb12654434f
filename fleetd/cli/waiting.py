"""Waiting for units to reach a state (the API's `x/wait` stream) and saying how it ended:
fleet's progress lines, each failure in systemd's words with the unit's last journal lines
(over SSH when the API cannot reach its machine), fleet's two error forms."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

import click

from fleetd.cli.context import Failure, settings
from fleetd.cli.output import machine_full_legend

__all__ = [
    "explain_failure",
    "failure_line",
    "report_wait_errors",
    "unit_state_line",
    "wait_for_units",
]


class _Progress:
    """`3/10 units ...` on stderr, rewritten in place; only when stderr is a terminal."""

    def __init__(self, total: int, state: str) -> None:
        self.total, self.done, self.state = total, 0, state
        self.shown = False
        self.enabled = total > 1 and _isatty(sys.stderr)

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self.shown = False

    def show(self) -> None:
        if self.enabled and self.done < self.total:
            sys.stderr.write(
                f"\r\x1b[KWaiting for {self.total - self.done} of {self.total} units "
                f"to report state {self.state}..."
            )
            sys.stderr.flush()
            self.shown = True


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def wait_for_units(
    names: Sequence[str],
    state: str,
    *,
    timeout: float | None,
    active: bool = False,
    lines: int = 10,
    settle: float = 0.0,
    quiet: frozenset[str] = frozenset(),
) -> list[str]:
    """Wait (server push) until every unit reports `state` or can no longer reach it; print
    fleet's line for each (but for the `quiet` units that reach it: those that were there
    already), and for a unit that failed why (systemd's words) and its journal.

    Returns fleet's error lines for the units that did not get there (empty when all did).
    """
    if not names:
        return []
    progress = _Progress(len(names), state)
    progress.show()
    errors: list[str] = []
    failed: list[dict[str, Any]] = []
    events: Iterable[dict[str, Any]] = (
        settings().client().wait(list(names), state, active=active, timeout=timeout, settle=settle)
    )
    try:
        for event in events:
            if event.get("done"):
                for pending in event.get("pending") or ():
                    line = f"timed out waiting for unit {pending['name']} to report state {state}"
                    if pending.get("reason"):
                        line += f" ({pending['reason']})"
                    errors.append(line)
                break
            progress.clear()
            if event.get("failed"):
                errors.append(failure_line(event))
                failed.append(event)
                if not event.get("unschedulable"):
                    click.echo(unit_state_line(event))
                    explain_failure(event, lines)
            elif event.get("name") not in quiet:
                click.echo(unit_state_line(event))
            progress.done += 1
            progress.show()
    finally:
        progress.clear()
        close = getattr(events, "close", None)
        if close is not None:
            close()
    return errors


def failure_line(event: dict[str, Any]) -> str:
    """`unit bad.service failed on 5ab7f3b4: systemd reports ...` (fleet's error form)."""
    from fleetd.unit import short_id

    where = f" on {short_id(event['machineID'])}" if event.get("machineID") else ""
    verb = "" if event.get("unschedulable") else f" failed{where}:"
    return f"unit {event['name']}{verb} {event.get('reason') or ''}".rstrip()


def explain_failure(event: dict[str, Any], lines: int) -> None:
    """What systemd said of a failed unit, then its last journal lines, on stderr."""
    from fleetd.api.client import APIError, MachineUnreachable
    from fleetd.unit import short_id

    name = event["name"]
    click.echo(f"{name}: {event.get('reason') or 'failed'}", err=True)
    if lines <= 0:
        return
    machine = event.get("machineID") or ""
    try:
        chunks = (
            settings().client().journal(name, lines=lines, follow=False, machine_id=machine or None)
        )
        text = b"".join(chunks).decode("utf-8", "replace")
    except MachineUnreachable as err:  # fleet's way: journalctl there, over SSH
        from fleetd.cli.remote import journal_text_over_ssh

        try:
            text = journal_text_over_ssh(name, err, lines)
        except Failure as why:
            click.echo(f"{name}: journal unavailable: {why.message}", err=True)
            return
    except APIError as err:  # say why there is no journal, and go on with the other units
        click.echo(f"{name}: journal unavailable: {err.message or err}", err=True)
        return
    where = short_id(machine) or "its machine"
    click.echo(f"{name}: last {lines} journal lines on {where}:", err=True)
    click.echo(text, err=True, nl=not text.endswith("\n"))


def unit_state_line(event: dict[str, Any]) -> str:
    """`Unit hello.service launched on 5ab7f3b4.../127.0.0.11` (no ` on ...` if unscheduled)."""
    msg = f"Unit {event['name']} {event.get('currentState') or ''}".rstrip()
    machine = event.get("machineID") or ""
    if machine:
        msg += f" on {machine_full_legend(machine, event.get('machineIP') or '', full=False)}"
    return msg


def report_wait_errors(errors: list[str]) -> None:
    """fleet's two error forms: one `Error waiting for units:` line per unit, then the summary."""
    if errors:
        lines = [f"Error waiting for units: {e}" for e in errors]
        lines.append(f"Error waiting for unit states, exit status: {errors[0]}")
        raise Failure("\n".join(lines))
