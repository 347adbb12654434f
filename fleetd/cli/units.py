"""Unit lifecycle commands after submit/load/start (`fleetd.cli.submit`): stop, unload,
destroy, restart, and cat."""

from __future__ import annotations

from typing import Any

import click

from fleetd.cli.context import (
    Failure,
    api_failure,
    block_options,
    block_timeout,
    emit_json,
    explain_failure,
    report_wait_errors,
    require_units,
    settings,
    triggered,
    unit_options,
    wait_for_units,
)
from fleetd.cli.output import is_global, unit_file_of

__all__ = ["COMMANDS"]


def _find_units(args: tuple[str, ...]) -> list[dict[str, Any]]:
    """The registered units the arguments name (unknown names are skipped, as in fleet)."""
    from fleetd.unit import mangle_name

    by_name = {u["name"]: u for u in settings().client().units()}
    wanted = dict.fromkeys(mangle_name(a) for a in args)
    return [by_name[n] for n in wanted if n in by_name]


def _stop_or_unload(
    args: tuple[str, ...], *, verb: str, state: str, done: str, no_block: bool, block_attempts: int
) -> None:
    require_units(args)
    units = _find_units(args)
    if not units:  # nothing to stop or unload: the end state holds (exit 0, as fleet; destroy too)
        click.echo("Units not found in registry", err=True)
        return
    client = settings().client()
    changes: list[dict[str, Any]] = []
    for unit in units:
        name, current = unit["name"], unit.get("currentState")
        if not is_global(unit):
            if verb == "stop" and current == "inactive":
                raise Failure(f"Unable to stop unit {name} in state inactive")
            if current == state:
                continue  # already there
        changes.append(unit)
    errors = client.put_units([{"name": u["name"], "desiredState": state} for u in changes])
    waiting: list[str] = []
    for unit, err in zip(changes, errors, strict=True):
        name = unit["name"]
        if err is not None:
            raise api_failure(f"Error setting target state of unit {name}", err)
        if is_global(unit):
            click.echo(f"Triggered global unit {name} {verb}")
        else:
            waiting.append(name)
    timeout = block_timeout(no_block, block_attempts)
    if timeout is False:
        triggered(waiting, verb)
    else:
        errors = wait_for_units(waiting, state, timeout=timeout)
        if errors:
            raise Failure(
                "\n".join(f"Error waiting for units: {e}" for e in errors)
                + f"\nFailed to {verb} units [{' '.join(waiting)}]. err: {errors[0]}"
            )
    click.echo(f"Successfully {done} units [{' '.join(waiting)}].", err=True)


@click.command(help="Instruct systemd to stop one or more units in the cluster.")
@block_options()
@click.argument("units", nargs=-1)
def stop(units: tuple[str, ...], no_block: bool, block_attempts: int) -> None:
    _stop_or_unload(
        units,
        verb="stop",
        state="loaded",
        done="stopped",
        no_block=no_block,
        block_attempts=block_attempts,
    )


@click.command(help="Unschedule one or more units in the cluster.")
@block_options()
@click.argument("units", nargs=-1)
def unload(units: tuple[str, ...], no_block: bool, block_attempts: int) -> None:
    _stop_or_unload(
        units,
        verb="unload",
        state="inactive",
        done="unloaded",
        no_block=no_block,
        block_attempts=block_attempts,
    )


@click.command(help="Destroy one or more units in the cluster")
@block_options()
@click.argument("units", nargs=-1)
def destroy(units: tuple[str, ...], no_block: bool, block_attempts: int) -> None:
    # Deleting is synchronous in the registry: when destroy_unit returns, the unit is gone, so
    # there is nothing to wait for; --no-block/--block-attempts are accepted for fleet's sake.

    require_units(units)
    found = _find_units(units)
    if not found:
        click.echo("Units not found in registry", err=True)
        return  # nothing left to destroy: the requested end state holds (exit 0, as fleet)
    client = settings().client()
    answers = client.destroy_units([u["name"] for u in found])
    errors = [None if a is None else f"Error destroying units: {a.message or a}" for a in answers]
    failed = [e for e in errors if e is not None]
    for unit, error in zip(found, errors, strict=True):
        if error is None:
            click.echo(f"Destroyed {unit['name']}")
    if failed:
        raise Failure("\n".join(failed))


def _restart_global(name: str, timeout: float | bool | None, lines: int) -> str | None:
    """Restart a Global unit on every machine that reports it, one machine at a time: each
    waited for until the unit is active again there, before the next one is asked; the first
    failure ends it (the machines after it are left alone). With --no-block (`timeout` False),
    every machine is asked at once and nothing is waited for. Returns a problem, or None."""
    from fleetd.api.client import APIError
    from fleetd.cli.output import machine_full_legend

    client = settings().client()
    try:
        machines = sorted({s["machineID"] for s in client.states(unit_name=name)})
    except APIError as err:
        raise api_failure(f"Error retrieving the states of unit {name}", err) from None
    if not machines:
        return f"Unable to restart global unit {name}: no machine runs it"
    if timeout is False:
        failed = []
        for machine in machines:
            try:
                client.restart(name, machine)
            except APIError as err:
                failed.append(f"Error restarting unit {name} on {machine}: {err.message or err}")
        click.echo(f"Triggered global unit {name} restart")
        if failed:
            raise Failure("\n".join(failed))
        return None
    try:
        ips = {m["id"]: m.get("primaryIP") or "" for m in client.machines()}
    except APIError as err:
        raise api_failure("Error retrieving the machines", err) from None

    def legend(machine: str) -> str:
        return machine_full_legend(machine, ips.get(machine, ""), full=False)

    for i, machine in enumerate(machines):
        try:
            answer = client.restart(name, machine, wait=True, timeout=timeout)
        except APIError as err:
            answer = {"restarted": False, "reason": err.message or str(err)}
        if answer.get("restarted"):
            click.echo(f"Unit {name} restarted on {legend(machine)}")
            continue
        explain_failure({"name": name, "reason": answer.get("reason"), "machineID": machine},
                        lines)  # fmt: skip
        errors = [f"Error restarting unit {name} on {legend(machine)}: {answer.get('reason')}"]
        rest = machines[i + 1 :]
        if rest:
            errors.append(
                f"Unit {name} was not restarted on {' '.join(legend(m) for m in rest)} "
                "(stopped at the first failure)"
            )
        raise Failure("\n".join(errors))
    return None


@click.command(help="Instruct systemd to rolling restart one or more units in the cluster.")
@block_options(lines=True, settle=True)
@click.argument("units", nargs=-1)
def restart(
    units: tuple[str, ...], no_block: bool, block_attempts: int, lines: int, settle: float
) -> None:
    from fleetd.api.client import APIError

    require_units(units)
    found = _find_units(units)
    if not found:
        raise Failure("Units not found in registry")
    client = settings().client()
    timeout = block_timeout(no_block, block_attempts)
    problems: list[str] = []
    for unit in found:
        name = unit["name"]
        steps = ["loaded", "launched"]
        if is_global(unit):
            if unit.get("desiredState") != "launched":
                problems.append(
                    f"Unable to restart unit {name} in state {unit.get('desiredState')}"
                )
                continue
            problem = _restart_global(name, timeout, lines)
            if problem is not None:
                problems.append(problem)
            continue
        current = unit.get("currentState")
        if current == "inactive":
            problems.append(f"Unable to restart unit {name} in state inactive")
            continue
        if current == "loaded":
            steps = ["launched"]
        for state in steps:  # one unit at a time: a rolling restart
            try:
                client.put_unit(name, desired_state=state)
            except APIError as err:
                raise api_failure(f"Error setting target state for unit {name}", err) from None
            if timeout is False:
                triggered([name], "restart")
                continue
            errors = wait_for_units(
                [name], state, timeout=timeout, active=state == "launched", lines=lines,
                settle=settle if state == "launched" else 0.0,
            )
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
@click.argument("units", nargs=-1)
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
