"""Commands about a machine's metadata: set-metadata and unset-metadata (beyond fleet, whose
API had the PATCH but whose fleetctl had no command for it).

What they change and say is decided by the pure `fleetd.reconcile.set_metadata`: the arguments
are checked before the API is asked anything; this module lists the machines, sends the PATCH
and prints.
"""

from __future__ import annotations

from typing import Any

import click

from fleetd.cli.context import Failure, api_failure, echo_lines, settings

__all__ = ["COMMANDS"]


def _carry_out(args: Any) -> None:
    """Resolve the machine among the live ones, send the plan's PATCH, print its lines."""
    from fleetd.api.client import APIError, Unreachable
    from fleetd.reconcile.set_metadata import plan_metadata

    if args.refusal:  # bad arguments: the API is not even asked
        raise Failure(args.refusal)
    client = settings().client()
    try:
        listed = client.machines()
    except Unreachable:
        raise
    except APIError as err:
        raise api_failure("Error retrieving list of active machines from fleet API", err) from None
    machines = {m.get("id") or "": m.get("metadata") or {} for m in listed}
    plan = plan_metadata(args, machines)
    if plan.refusal:
        raise Failure(plan.refusal)
    if plan.operations:
        try:
            client.patch_machines(plan.operations)
        except Unreachable:
            raise
        except APIError as err:
            what = f"Error changing metadata of machine {plan.machine_id}"
            raise api_failure(what, err) from None
    echo_lines(plan.lines)


_MACHINE = "MACHINE is a machine ID or a unique prefix of one (list-machines shows them)."


@click.command(
    "set-metadata",
    short_help="Set metadata of a machine (beyond fleet)",
    help="Set metadata of a machine: MACHINE KEY=VALUE... (beyond fleet). "
    f"{_MACHINE} The value overrides the machine's configured one and outlives fleetd "
    "restarts; VALUE may hold several values separated by '|' ('disk=ssd|nvme', quoted "
    "for the shell).",
)
@click.argument("args", nargs=-1, metavar="MACHINE KEY=VALUE...")
def set_metadata(args: tuple[str, ...]) -> None:
    from fleetd.reconcile.set_metadata import read_set_args

    _carry_out(read_set_args(args))


@click.command(
    "unset-metadata",
    short_help="Remove metadata keys of a machine (beyond fleet)",
    help="Remove metadata keys of a machine: MACHINE KEY... (beyond fleet). "
    f"{_MACHINE} A key from the machine's configuration is hidden too.",
)
@click.argument("args", nargs=-1, metavar="MACHINE KEY...")
def unset_metadata(args: tuple[str, ...]) -> None:
    from fleetd.reconcile.set_metadata import read_unset_args

    _carry_out(read_unset_args(args))


COMMANDS = [set_metadata, unset_metadata]
