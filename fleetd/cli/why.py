"""`fleetctl why UNIT`: why a unit runs where it does, or why it runs nowhere.

fleetd works it out (`GET x/why/{name}`, the pure `fleetd/reconcile/why.py` over the whole
registry); this command names the unit, asks, and prints the answer's lines (or its JSON).
"""

from __future__ import annotations

import click

from fleetd.cli.complete import registered_units
from fleetd.cli.context import Failure, emit_json, settings

__all__ = ["COMMANDS"]


@click.command(help="Explain why a unit runs on its machine, or why it runs nowhere")
@click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text (the explanation) or json (the same facts, as fleetd's x/why answers them).",
)
@click.argument("units", nargs=-1, metavar="UNIT", shell_complete=registered_units)
def why(units: tuple[str, ...], output: str) -> None:
    from fleetd.api.client import APIError, Unreachable
    from fleetd.unit import mangle_name

    if len(units) != 1:
        raise Failure("One unit must be provided")
    name = mangle_name(units[0])
    try:
        found = settings().client().why(name)
    except Unreachable:
        raise  # one line, from main()
    except APIError as err:
        if err.code == 404 and err.message:  # fleet's words: `Unit x.service does not exist.`
            raise Failure(err.message) from None
        if err.code == 404:  # no such route: a fleet, or a fleetd before x/why
            raise Failure("Error: this fleet API cannot explain units (no x/why)") from None
        if err.code == 400:
            raise Failure(f"Error: {err.message}") from None
        raise
    if output == "json":
        emit_json(found)
        return
    for line in found.get("lines") or ():
        click.echo(line)


COMMANDS = [why]
