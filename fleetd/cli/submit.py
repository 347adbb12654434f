"""submit, load, start: put units into the cluster, then bring them to a desired state.

What to create, replace, set and wait for is decided by the pure `fleetd.reconcile.submit`;
this module only gathers what it needs (the local files, the units the API knows), carries
the plan out and prints its lines, in fleet's order and with fleet's messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from fleetd.cli.complete import unit_files
from fleetd.cli.context import (
    Failure,
    api_failure,
    block_options,
    block_timeout,
    echo_lines,
    require_units,
    settings,
    unit_options,
)
from fleetd.cli.waiting import report_wait_errors, wait_for_units

if TYPE_CHECKING:  # imported when a command runs: `fleetctl version` loads no unit model
    from fleetd.reconcile.submit import SubmitPlan

__all__ = ["COMMANDS"]

_replace_option = click.option(
    "--replace", is_flag=True, help="Replace the unit in the registry if the local file differs."
)


def _submit(
    command: str,
    args: tuple[str, ...],
    *,
    replace: bool,
    no_block: bool = True,
    block_attempts: int = 0,
    lines: int = 10,
    settle: float = 0.0,
) -> None:
    """Plan `fleetctl <command> args` on the local files and the registered units, then do it."""
    from fleetd.api.client import APIError
    from fleetd.cli import files
    from fleetd.cli.output import unit_file_of
    from fleetd.reconcile.submit import Registered, names_to_look_up, plan_submit

    require_units(args)
    timeout = block_timeout(no_block, block_attempts)
    client = settings().client()
    try:
        known = client.units_named(names_to_look_up(args))
    except APIError as err:
        raise api_failure(
            "Error creating units: error retrieving units from Registry", err
        ) from None
    registered = {
        name: Registered(unit_file_of(unit), unit.get("desiredState") or "")
        for name, unit in known.items()
    }
    arguments = files.read_arguments(args)
    plan = plan_submit(command, arguments, registered, replace=replace, block=timeout is not False)
    _carry_out(plan)
    rolled: set[str] = set()
    if timeout is not False:  # a rollout's units are judged by the rollout, not waited for
        rolled = _follow_rollouts(plan, lines)
    waited = tuple(n for n in plan.wait.units if n not in rolled) if plan.wait else ()
    if plan.wait is not None and waited and timeout is not False:
        errors = wait_for_units(
            waited, plan.wait.state, timeout=timeout, lines=lines,
            active=plan.wait.state == "launched", settle=settle, quiet=plan.wait.quiet,
        )  # fmt: skip
        report_wait_errors(errors)


def _follow_rollouts(plan: SubmitPlan, lines: int) -> set[str]:
    """A replaced launched Global unit, or every launched instance of a template replaced with
    one new version, is rolled out, not replaced everywhere at once (docs/rolling-updates.md):
    follow each such rollout until it is over (done, or waiting for the user: canaries,
    paused); returns the units followed."""
    from fleetd.api.client import APIError
    from fleetd.cli.rollout import follow_rollout

    replaced = {w.name: w.unit.hash for w in plan.writes if not w.desired}
    if not replaced:
        return set()
    try:
        rollouts = settings().client().rollouts()  # one listing, however many units
    except APIError:  # a fleet without rollouts
        return set()
    followed: set[str] = set()
    for doc in rollouts:
        units = {t.get("unit") for t in doc.get("targets") or ()}
        ours = [n for n in units if replaced.get(n) == doc.get("to")]
        if ours and doc.get("state") not in ("done", "reverted", "cancelled"):
            follow_rollout(doc, lines=lines)
            followed |= units
    return followed


def _carry_out(plan: SubmitPlan) -> None:
    """The plan's requests and lines, up to the wait: the first request that fails ends it."""
    echo_lines(plan.notes)
    if plan.refusal:
        raise Failure(plan.refusal)
    client = settings().client()
    rolled = _begin_template_rollouts(plan)
    puts = [w for w in plan.writes if w.name not in rolled]
    writes = [_unit_body(w.name, w.unit, w.desired) for w in puts]
    for write, err in zip(puts, client.put_units(writes), strict=True):
        if err is not None:
            raise api_failure(f"Error creating units: failed creating unit {write.name}", err)
    echo_lines(plan.written)
    states = [{"name": name, "desiredState": plan.state} for name in plan.set]
    for name, err in zip(plan.set, client.put_units(states), strict=True):
        if err is not None:
            raise api_failure(f"Error setting target state of unit {name}", err)
    echo_lines(plan.triggered)


def _begin_template_rollouts(plan: SubmitPlan) -> set[str]:
    """`start --replace` of every launched instance of a template with one new version rolls
    it out (`reconcile/submit.template_rollouts`) instead of replacing them all at once; the
    instances it covers (their rollouts are followed by `_follow_rollouts`)."""
    from fleetd.api.client import APIError
    from fleetd.reconcile.submit import template_rollouts

    if not any(not w.desired and "@" in w.name for w in plan.writes):
        return set()
    client = settings().client()
    try:
        launched = [u["name"] for u in client.units() if u.get("desiredState") == "launched"]
    except APIError as err:
        raise api_failure(
            "Error creating units: error retrieving units from Registry", err
        ) from None
    covered: set[str] = set()
    for template, writes in template_rollouts(plan.writes, launched).items():
        try:
            client.begin_rollout(template, "update", unit_options(writes[0].unit))
        except APIError as err:
            raise api_failure(f"Error rolling out {template}", err) from None
        covered |= {w.name for w in writes}
    return covered


def _unit_body(name: str, unit: Any, desired: str) -> dict[str, Any]:
    """The PUT of a unit created in `desired`, or replaced (no `desired`: the state is kept)."""
    body: dict[str, Any] = {"name": name, "options": unit_options(unit)}
    if desired:
        body["desiredState"] = desired
    return body


@click.command(help="Upload one or more units to the cluster without starting them")
@_replace_option
@click.argument("units", nargs=-1, shell_complete=unit_files)
def submit(units: tuple[str, ...], replace: bool) -> None:
    _submit("submit", units, replace=replace)


@click.command(
    help="Schedule one or more units in the cluster, first submitting them if necessary."
)
@block_options(lines=True)
@_replace_option
@click.argument("units", nargs=-1, shell_complete=unit_files)
def load(
    units: tuple[str, ...], no_block: bool, block_attempts: int, lines: int, replace: bool
) -> None:
    _submit(
        "load", units, replace=replace, no_block=no_block, block_attempts=block_attempts,
        lines=lines,
    )  # fmt: skip


@click.command(
    help="Instruct systemd to start one or more units in the cluster, first submitting and "
    "loading if necessary."
)
@block_options(lines=True, settle=True)
@_replace_option
@click.argument("units", nargs=-1, shell_complete=unit_files)
def start(
    units: tuple[str, ...],
    no_block: bool,
    block_attempts: int,
    lines: int,
    settle: float,
    replace: bool,
) -> None:
    _submit(
        "start", units, replace=replace, no_block=no_block, block_attempts=block_attempts,
        lines=lines, settle=settle,
    )  # fmt: skip


COMMANDS: list[Any] = [submit, load, start]
