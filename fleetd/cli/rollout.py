"""Rolling updates: `fleetctl rolling-replace UNIT|TEMPLATE` and `fleetctl rollout
status|pause|resume|promote|undo|list` (docs/rolling-updates.md).

fleetd rolls a new version out (the engine leader moves the rollout on, the agents judge each
instance's health); these commands begin it, steer it and follow it. What is printed, when
following ends and whether the command failed are decided by the pure
`fleetd.reconcile.rollout_report`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import click

from fleetd.cli.complete import registered_units, unit_files
from fleetd.cli.context import Failure, api_failure, emit_json, settings, unit_options

__all__ = ["COMMANDS", "follow_restart", "follow_rollout"]

_no_block = click.option(
    "--no-block", is_flag=True, help="Do not follow the rollout: print where it is and exit."
)
_output = click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text (progress lines) or json (the rollout as fleetd's x/rollouts shows it).",
)
_lines = click.option(
    "--lines",
    type=int,
    default=10,
    show_default=True,
    help="Journal lines shown of the instance that failed.",
)


def _versions(doc: dict[str, Any], goal: str, block: bool = True) -> Iterator[dict[str, Any]]:
    """The rollout `doc`, then (unless `block` is False) each version of it as it comes, up to
    the first that is over for a command wanting `goal` (`rollout_report.report`)."""
    from fleetd.api.client import APIError
    from fleetd.reconcile.rollout_report import report

    yield doc
    if not block or report(doc, goal=goal).over:
        return
    name = doc.get("name", "")
    try:
        for current in settings().client().follow_rollout(name):
            yield current
            if report(current, goal=goal).over:
                return
    except APIError as err:
        raise api_failure(f"Error following the rollout of {name}", err) from None


def follow_rollout(
    doc: dict[str, Any], *, goal: str = "done", block: bool = True, output: str = "text",
    lines: int = 10,
) -> None:  # fmt: skip
    """Print the rollout `doc` and, unless `block` is False, every change of it until it is
    over for the command; a rollout that ended elsewhere than `goal` fails the command (the
    failed instance's journal lines first)."""
    from fleetd.cli.waiting import explain_failure
    from fleetd.reconcile.rollout_report import report

    last, current = "", doc
    for current in _versions(doc, goal, block):
        said = report(current, goal=goal)
        if output == "json":
            click.echo(json.dumps(current, separators=(",", ":")))
        elif said.line != last:
            click.echo(said.line)
            last = said.line
    said = report(current, goal=goal)
    if said.hint and output == "text":
        click.echo(said.hint)
    if said.failure:
        if said.failed_unit:
            reason = next(
                (
                    t.get("reason")
                    for t in current.get("targets") or ()
                    if t.get("unit") == said.failed_unit and t.get("machine") == said.failed_machine
                ),
                "",
            )
            explain_failure(
                {"name": said.failed_unit, "reason": reason, "machineID": said.failed_machine},
                lines,
            )
        raise Failure(said.failure)


def follow_restart(doc: dict[str, Any], rolling: Any, legends: dict[str, str], lines: int) -> None:
    """Follow a restart rollout of a Global unit as `fleetctl restart` reports it: one line per
    machine once restarted and healthy, then fleet's failure lines if one fails there
    (`Rolling` of fleetd.reconcile.lifecycle)."""
    from fleetd.cli.context import echo_lines
    from fleetd.cli.waiting import explain_failure
    from fleetd.reconcile.rollout_report import report

    name, said_healthy, current = doc.get("name", ""), set(), doc
    for current in _versions(doc, "done"):
        for target in current.get("targets") or ():
            if target.get("phase") == "healthy" and target["machine"] not in said_healthy:
                said_healthy.add(target["machine"])
                echo_lines((rolling.restarted(legends.get(target["machine"], target["machine"])),))
    said = report(current)
    if not said.failure:
        if said.hint:
            click.echo(said.hint)
        return
    failed = next((t for t in current.get("targets") or () if t.get("phase") == "failed"), None)
    if failed is None:
        raise Failure(said.failure)
    machine, reason = failed["machine"], failed.get("reason") or "unhealthy"
    explain_failure({"name": name, "reason": reason, "machineID": machine}, lines)
    untouched = [t["machine"] for t in current.get("targets") or () if t.get("phase") == "pending"]
    raise Failure(rolling.stopped_at(machine, reason, legends, untouched))


def _read_local(arg: str) -> tuple[str, Any]:
    """The unit (or template) name an argument means and its local file."""
    from fleetd.cli import files
    from fleetd.unit import mangle_name

    path = files.local_path(arg)
    name = mangle_name(arg)
    try:
        return name, files.read_unit_file(path)
    except files.BadFile as err:
        raise Failure(f"Error reading the new version of {name}: {err}") from None


@click.command(
    "rolling-replace",
    help="Roll a new version of a Global unit, or of every instance of a template, out over "
    "the cluster: a few instances at a time, each healthy before the next (the unit's "
    "Update*= options).",
)
@_no_block
@_output
@_lines
@click.argument("unit", metavar="UNIT|TEMPLATE", shell_complete=unit_files)
def rolling_replace(unit: str, no_block: bool, output: str, lines: int) -> None:
    from fleetd.api.client import APIError

    name, local = _read_local(unit)
    try:
        answer = settings().client().begin_rollout(name, "update", unit_options(local))
    except APIError as err:
        raise api_failure(f"Error rolling out {name}", err) from None
    doc = answer.get("rollout")
    if doc is None:
        click.echo(f"Replaced {name}: no instance was running, nothing to roll")
        return
    follow_rollout(doc, block=not no_block, output=output, lines=lines)


@click.group(help="Follow and steer rollouts: status, pause, resume, promote, undo, list")
def rollout() -> None:
    pass


def _name(arg: str) -> str:
    from fleetd.unit import mangle_name

    return mangle_name(arg)


@rollout.command(help="Where the rollout of a unit or template is; follows it until it is over")
@_no_block
@_output
@_lines
@click.argument("unit", metavar="UNIT|TEMPLATE", shell_complete=registered_units)
def status(unit: str, no_block: bool, output: str, lines: int) -> None:
    from fleetd.api.client import APIError
    from fleetd.reconcile.rollout_report import status_lines

    name = _name(unit)
    try:
        doc = settings().client().rollout(name)
    except APIError as err:
        raise api_failure(f"Error retrieving the rollout of {name}", err) from None
    if no_block:
        if output == "json":
            emit_json(doc)
        else:
            for line in status_lines(doc):
                click.echo(line)
        return
    follow_rollout(doc, output=output, lines=lines, goal=_goal_of(doc))


def _goal_of(doc: dict[str, Any]) -> str:
    return "reverted" if doc.get("reason") == "undone" else "done"


def _command(verb: str, unit: str, no_block: bool, output: str, lines: int) -> None:
    from fleetd.api.client import APIError

    name = _name(unit)
    try:
        doc = settings().client().rollout_command(name, verb)
    except APIError as err:
        raise api_failure(f"Error: cannot {verb} the rollout of {name}", err) from None
    if verb == "pause":
        no_block = True
    follow_rollout(
        doc, goal="reverted" if verb == "undo" else "done", block=not no_block,
        output=output, lines=lines,
    )  # fmt: skip


def _verb_command(verb: str, text: str) -> click.Command:
    @click.command(verb, help=text)
    @_no_block
    @_output
    @_lines
    @click.argument("unit", metavar="UNIT|TEMPLATE", shell_complete=registered_units)
    def command(unit: str, no_block: bool, output: str, lines: int) -> None:
        _command(verb, unit, no_block, output, lines)

    return command


for _verb, _text in (
    ("pause", "Touch no more instances until resumed (those being judged finish)"),
    ("resume", "Go on with a paused rollout, or try a failed one's instances again"),
    ("promote", "Roll out to the rest once the canaries are healthy"),
    ("undo", "Return every updated instance (and the unit) to the previous version"),
):
    rollout.add_command(_verb_command(_verb, _text))


@rollout.command("list", help="Every rollout the cluster keeps: running and last finished")
@_output
def list_rollouts(output: str) -> None:
    from fleetd.api.client import APIError

    try:
        docs = settings().client().rollouts()
    except APIError as err:
        raise api_failure("Error retrieving the rollouts", err) from None
    if output == "json":
        emit_json(docs)
        return
    click.echo("NAME\tACTION\tSTATE\tPROGRESS")
    for doc in docs:
        click.echo(
            f"{doc.get('name')}\t{doc.get('action')}\t{doc.get('state')}\t{doc.get('progress')}"
        )


_EXAMPLES = {
    "status": "fleetctl rollout status web@.service",
    "pause": "fleetctl rollout pause web@.service",
    "resume": "fleetctl rollout resume web@.service",
    "promote": "fleetctl rollout promote web@.service",
    "undo": "fleetctl rollout undo web@.service",
    "list": "fleetctl rollout list",
}
for _sub_name, _sub in rollout.commands.items():
    _sub.epilog = f"\b\nExample:\n  {_EXAMPLES[_sub_name]}"

COMMANDS = [rolling_replace, rollout]
