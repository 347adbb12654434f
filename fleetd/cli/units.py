"""Unit lifecycle commands after submit/load/start (`fleetd.cli.submit`): stop, unload,
destroy, restart, and cat.

What each does to which unit — skipped, refused, set, destroyed, restarted machine by
machine, waited for — and what it says is decided by the pure `fleetd.reconcile.lifecycle`;
this module lists the registered units, carries the plan out and waits, in fleet's order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from fleetd.cli.complete import registered_units
from fleetd.cli.context import (
    Failure,
    api_failure,
    block_options,
    block_timeout,
    echo_lines,
    emit_json,
    require_units,
    settings,
    unit_options,
)
from fleetd.cli.output import listed_unit, unit_file_of
from fleetd.cli.waiting import report_wait_errors, wait_for_units

if TYPE_CHECKING:  # imported when a command runs: `fleetctl version` loads no unit model
    from fleetd.reconcile.lifecycle import Listed

__all__ = ["COMMANDS"]


def _find_units(args: tuple[str, ...]) -> list[Listed]:
    """The registered units the arguments name (unknown names are skipped, as in fleet): asked
    by name, never a listing of the whole registry (a stop of 10 units in a cluster of 100,000
    reads 10)."""
    from fleetd.reconcile.lifecycle import named_units
    from fleetd.unit import mangle_name

    names = list(dict.fromkeys(mangle_name(arg) for arg in args))
    registered = settings().client().units_named(names)
    return [listed_unit(unit) for unit in named_units(args, registered)]


def _stop_or_unload(verb: str, args: tuple[str, ...], no_block: bool, block_attempts: int) -> None:
    from fleetd.reconcile.lifecycle import plan_target

    require_units(args)
    timeout = block_timeout(no_block, block_attempts)
    plan = plan_target(verb, _find_units(args), block=timeout is not False)
    echo_lines(plan.notes)
    if plan.refusal:
        raise Failure(plan.refusal)
    if not plan.done:  # nothing to stop or unload: the end state holds (exit 0, as fleet)
        return
    client = settings().client()
    errors = client.put_units([{"name": s.name, "desiredState": plan.state} for s in plan.set])
    for change, err in zip(plan.set, errors, strict=True):
        if err is not None:
            raise api_failure(f"Error setting target state of unit {change.name}", err)
        if change.triggered is not None:
            echo_lines((change.triggered,))
    echo_lines(plan.triggered)
    if plan.wait:
        errors = wait_for_units(plan.units, plan.state, timeout=timeout)
        if errors:
            raise Failure(plan.failure(errors))
    echo_lines(plan.done)


@click.command(help="Instruct systemd to stop one or more units in the cluster.")
@block_options()
@click.argument("units", nargs=-1, shell_complete=registered_units)
def stop(units: tuple[str, ...], no_block: bool, block_attempts: int) -> None:
    _stop_or_unload("stop", units, no_block, block_attempts)


@click.command(help="Unschedule one or more units in the cluster.")
@block_options()
@click.argument("units", nargs=-1, shell_complete=registered_units)
def unload(units: tuple[str, ...], no_block: bool, block_attempts: int) -> None:
    _stop_or_unload("unload", units, no_block, block_attempts)


@click.command(help="Destroy one or more units in the cluster")
@block_options()
@click.argument("units", nargs=-1, shell_complete=registered_units)
def destroy(units: tuple[str, ...], no_block: bool, block_attempts: int) -> None:
    from fleetd.reconcile.lifecycle import plan_destroy

    require_units(units)
    plan = plan_destroy(_find_units(units))
    echo_lines(plan.notes)
    if not plan.destroy:
        return  # nothing left to destroy: the requested end state holds (exit 0, as fleet)
    answers = settings().client().destroy_units(list(plan.destroy))
    said, failure = plan.report([None if a is None else a.message or str(a) for a in answers])
    echo_lines(said)
    if failure:
        raise Failure(failure)


def _restart_global(name: str, timeout: float | bool | None, lines: int) -> str | None:
    """The rolling restart of the Global unit `name` (`plan_rolling_restart` for what to say):
    a health-gated restart rollout (docs/rolling-updates.md) — a few machines at a time as the
    unit's `Update*=` options say, each healthy again before the next — followed unless
    --no-block (`timeout` False); a failure is explained (systemd's words, the journal) and
    ends the command. Returns the problem to report with the other units', or None."""
    from fleetd.api.client import APIError
    from fleetd.cli.output import machine_full_legend
    from fleetd.cli.rollout import follow_restart
    from fleetd.reconcile.lifecycle import plan_rolling_restart

    client = settings().client()
    try:
        reporting = [s["machineID"] for s in client.states(unit_name=name)]
    except APIError as err:
        raise api_failure(f"Error retrieving the states of unit {name}", err) from None
    rolling = plan_rolling_restart(name, reporting, block=timeout is not False)
    if rolling.problem:
        return rolling.problem
    try:
        answer = client.begin_rollout(name, "restart")
    except APIError as err:
        raise api_failure(f"Error restarting unit {name}", err) from None
    if not rolling.wait:
        echo_lines(rolling.triggered)
        return None
    try:
        ips = {m["id"]: m.get("primaryIP") or "" for m in client.machines()}
    except APIError as err:
        raise api_failure("Error retrieving the machines", err) from None
    doc = answer.get("rollout") or {}
    machines = sorted({t["machine"] for t in doc.get("targets") or ()} | set(rolling.machines))
    legends = {m: machine_full_legend(m, ips.get(m, ""), full=False) for m in machines}
    follow_restart(doc, rolling, legends, lines)
    return None


@click.command(help="Instruct systemd to rolling restart one or more units in the cluster.")
@block_options(lines=True, settle=True)
@click.argument("units", nargs=-1, shell_complete=registered_units)
def restart(
    units: tuple[str, ...], no_block: bool, block_attempts: int, lines: int, settle: float
) -> None:
    from fleetd.api.client import APIError
    from fleetd.reconcile.lifecycle import plan_restart

    require_units(units)
    timeout = block_timeout(no_block, block_attempts)
    plan = plan_restart(_find_units(units), block=timeout is not False)
    if plan.refusal:
        raise Failure(plan.refusal)
    client = settings().client()
    problems: list[str] = []
    for unit in plan.units:  # one unit at a time: a rolling restart
        problem = _restart_global(unit.name, timeout, lines) if unit.rolling else unit.problem
        if problem:
            problems.append(problem)
        for step in unit.steps:
            try:
                client.put_unit(unit.name, desired_state=step.state)
            except APIError as err:
                raise api_failure(f"Error setting target state for unit {unit.name}", err) from None
            if step.triggered is not None:  # --no-block
                echo_lines((step.triggered,))
                continue
            errors = wait_for_units(
                [unit.name], step.state, timeout=timeout, active=step.active, lines=lines,
                settle=settle if step.active else 0.0,
            )  # fmt: skip
            report_wait_errors(errors)
    if problems:
        raise Failure("\n".join(problems))


@click.command(help="Output the contents of a submitted unit")
@click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    help="text (the unit file) or json.",
)
@click.argument("units", nargs=-1, shell_complete=registered_units)
def cat(units: tuple[str, ...], output: str) -> None:
    from fleetd.unit import mangle_name

    if len(units) != 1:
        raise Failure("One unit file must be provided")
    name = mangle_name(units[0])
    unit = settings().client().unit(name)
    if unit is None:
        raise Failure(f"Unit {name} not found")
    uf = unit_file_of(unit)
    if output == "json":
        emit_json(
            {"name": name, "hash": uf.hash, "options": unit_options(uf), "text": uf.serialize()}
        )
    else:
        click.echo(uf.serialize(), nl=False)


COMMANDS = [cat, restart, stop, unload, destroy]
