"""Cordon and drain (beyond fleet): `fleetctl cordon MACHINE`, `uncordon MACHINE` and `drain
MACHINE [--stop-globals] [--no-block]`.

fleetd's engine leader moves a drain on (one unit at a time, each healthy where it went before
the next); these commands cordon, uncordon, begin a drain and follow it. Which machine an
argument names, what is printed and whether the command failed are decided by the pure
`fleetd.reconcile.drain_report`.
"""

from __future__ import annotations

from typing import Any

import click

from fleetd.cli.context import Failure, api_failure, settings

__all__ = ["COMMANDS"]

_MACHINE = "MACHINE is a machine ID or a unique prefix of one (list-machines shows them)."


def _machine_id(client: Any, prefix: str, *, cordoned_too: bool = False) -> str:
    """The full ID of the machine `prefix` names among the live ones (and, `cordoned_too`,
    the cordoned ones: a cordon outlives its machine)."""
    from fleetd.api.client import APIError, Unreachable
    from fleetd.reconcile.drain_report import resolve_machine

    try:
        ids = [m.get("id") or "" for m in client.machines()]
        if cordoned_too:
            ids += [c.get("machine") or "" for c in client.cordons()]
    except Unreachable:
        raise
    except APIError as err:
        raise api_failure("Error retrieving list of active machines from fleet API", err) from None
    machine_id, why = resolve_machine(ids, prefix)
    if machine_id is None:
        raise Failure(why)
    return machine_id


@click.command(
    "cordon",
    short_help="Take no new units on a machine (beyond fleet)",
    help=f"Cordon a machine: the scheduler places no new unit there; the units there, Global "
    f"ones too, stay. {_MACHINE}",
)
@click.argument("machine")
def cordon(machine: str) -> None:
    from fleetd.api.client import APIError
    from fleetd.reconcile.drain_report import cordon_line

    client = settings().client()
    machine_id = _machine_id(client, machine)
    try:
        answer = client.cordon(machine_id)
    except APIError as err:
        raise api_failure(f"Error cordoning machine {machine_id}", err) from None
    click.echo(cordon_line(answer))


@click.command(
    "uncordon",
    short_help="Let a machine take new units again (beyond fleet)",
    help=f"Uncordon a machine: it takes new units again; a drain of it ends where it is. "
    f"{_MACHINE}",
)
@click.argument("machine")
def uncordon(machine: str) -> None:
    from fleetd.api.client import APIError
    from fleetd.reconcile.drain_report import uncordon_line

    client = settings().client()
    machine_id = _machine_id(client, machine, cordoned_too=True)
    try:
        answer = client.uncordon(machine_id)
    except APIError as err:
        raise api_failure(f"Error uncordoning machine {machine_id}", err) from None
    click.echo(uncordon_line(answer, machine_id))


@click.command(
    "drain",
    short_help="Move every unit off a machine, one at a time (beyond fleet)",
    help=f"Drain a machine: cordon it, then move its units (all but Global ones) to other "
    f"machines one at a time, each healthy where it went before the next, within the units' "
    f"DisruptionBudget=. Follows the drain until the machine is drained; fails if a unit is "
    f"unhealthy where it went (the drain stops, the machine stays cordoned). {_MACHINE}",
)
@click.option(
    "--stop-globals", is_flag=True, help="Once drained, stop the machine's Global units too."
)
@click.option("--no-block", is_flag=True, help="Do not follow the drain: print where it is.")
@click.argument("machine")
def drain(machine: str, stop_globals: bool, no_block: bool) -> None:
    from fleetd.api.client import APIError
    from fleetd.model import short_id

    client = settings().client()
    machine_id = _machine_id(client, machine)
    try:
        answer = client.drain(machine_id, stop_globals=stop_globals)
    except APIError as err:
        raise api_failure(f"Error draining machine {machine_id}", err) from None
    doc = answer.get("cordon") or {}
    if not answer.get("changed"):
        click.echo(f"Machine {short_id(machine_id)} is already draining")
    _follow(client, machine_id, doc, block=not no_block)


def _follow(client: Any, machine_id: str, doc: dict[str, Any], *, block: bool) -> None:
    """Print the drain's line, then each new one until it is over (unless not `block`)."""
    from fleetd.api.client import APIError
    from fleetd.reconcile.drain_report import report

    said = report(doc)
    click.echo(said.line)
    if not block or said.over:
        if said.failure:
            raise Failure(said.failure)
        return
    last = said.line
    try:
        for current in client.follow_drain(machine_id):
            said = report(current)
            if said.line != last:
                click.echo(said.line)
                last = said.line
            if said.over:
                break
    except APIError as err:
        raise api_failure(f"Error following the drain of {machine_id}", err) from None
    if said.failure:
        raise Failure(said.failure)
    if not said.over:  # the stream ended before the drain: uncordoned meanwhile
        raise Failure(f"Error: machine {machine_id} was uncordoned: its drain ended")


COMMANDS = [cordon, uncordon, drain]
