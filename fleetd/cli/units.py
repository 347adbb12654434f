"""Unit lifecycle commands: submit, load, start, stop, unload, destroy, restart, cat."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import click

from fleetd.cli.context import (
    DEFAULT_SETTLE,
    Failure,
    api_error_line,
    block_timeout,
    emit_json,
    explain_failure,
    report_wait_errors,
    settings,
    triggered,
    wait_for_units,
)
from fleetd.cli.output import is_global, unit_file_of

__all__ = ["COMMANDS"]


def _options(unit: Any) -> list[dict[str, str]]:
    return [{"section": o.section, "name": o.name, "value": o.value} for o in unit.options]


def _require_args(args: tuple[str, ...]) -> None:
    if not args:
        raise Failure("No units given")


def _api_failure(prefix: str, err: Exception) -> Failure:
    from fleetd.api.client import CannotConnect

    if isinstance(err, CannotConnect):  # the same line whatever the command was doing
        return Failure(api_error_line(err))
    return Failure(f"{prefix}: {getattr(err, 'message', None) or err}")


def _lazy_create(
    command: str, args: tuple[str, ...], *, replace: bool, target: str = "inactive"
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """fleet's lazyCreateUnits: make sure a unit exists for every argument.

    A new unit is created already in the desired state `target` (load, start): fleet creates
    it inactive and sets the state in a second request; one request does both here (a
    non-global template instance or not, the unit is placed as soon as it exists).
    Returns the names of units replaced in place (--replace) or created in `target`, which the
    caller waits for though their desired state does not change, and the units as now known.
    """
    from fleetd.api.client import APIError
    from fleetd.cli import files
    from fleetd.unit import (
        UnitFile,
        UnitNameError,
        UnitValidationError,
        mangle_name,
        parse_name,
    )

    client = settings().client()
    created: list[str] = []
    created_global: list[str] = []
    replaced: list[str] = []
    puts: list[tuple[str, Any, str | None]] = []  # (name, unit file, desired state) to PUT
    seen: set[str] = set()
    wanted = []
    for arg in args:
        with contextlib.suppress(UnitNameError):
            info = parse_name(mangle_name(arg))
            wanted += [info.full, info.template] if info.is_instance else [info.full]
    try:
        known = _lookup(client, wanted)
    except APIError as err:
        raise _api_failure(
            "Error creating units: error retrieving units from Registry", err
        ) from None
    for arg in args:
        name = mangle_name(arg)
        if name in seen:
            continue
        seen.add(name)
        if arg.rsplit("/", 1)[-1] in ("", ".", ".."):  # a directory: no unit file named
            raise Failure(f'Error creating units: argument "{arg}" names no unit')
        try:
            info = parse_name(name)
        except UnitNameError as err:
            raise Failure(f"Error creating units: {err}") from None
        if info.is_template and target != "inactive":  # refused before anything is written
            raise Failure(
                f'Error creating units: cannot activate template "{name}": {command} an '
                f"instance of it, e.g. {info.prefix}@1.{info.type}"
            )
        existing = known.get(name)
        if existing is not None:
            try:
                local = files.local_counterpart(arg)
            except files.BadFile as err:
                if replace:  # the file to replace the unit with is unusable: say why
                    raise Failure(
                        f"Error creating units: failed getting Unit({name}) from file {err}"
                    ) from None
                local = None  # as fleet: the registered unit is used, the file not compared
            if local is None:
                if replace:
                    raise Failure(
                        f"Error creating units: unable to find a local file for Unit({name}) "
                        "to replace it with"
                    )
                continue  # in the registry, nothing local to compare: use it as it is
            path, local_unit = local
            if local_unit.hash == unit_file_of(existing).hash:
                if replace:
                    click.echo(f"Found same Unit({name}) in Registry, nothing to do")
                continue
            if not replace:
                kind = "template unit file" if path != files.local_path(arg) else "unit file"
                click.echo(
                    f"WARNING: Unit {name} in registry differs from local {kind} {arg}. "
                    "Add --replace to override.",
                    err=True,
                )
                continue
            desired = existing.get("desiredState") or ""
            if not files.replace_allowed(command, desired):
                click.echo(
                    f"Warning: can not replace Unit({name}) in state '{desired}', "
                    "use the appropriate command",
                    err=True,
                )
                continue
            puts.append((name, local_unit, None))
            replaced.append(name)
            continue

        template = None
        if info.is_instance and not os.path.exists(files.local_path(arg)):
            tmpl = known.get(info.template)
            if tmpl is not None:
                template = unit_file_of(tmpl)
        try:
            found = files.find_local(arg, registry_template=template)
        except files.NotFound as err:
            raise Failure(f"Error creating units: {err}") from None
        except files.BadFile as err:  # the file (or template) exists but cannot be read
            raise Failure(
                f"Error creating units: failed getting Unit({name}) from file {err}"
            ) from None
        unit: UnitFile = found.unit
        reqs = unit.requirements(name)
        try:
            reqs.validate()
        except UnitValidationError as err:
            raise Failure(f"Error creating units: failed creating unit {name}: {err}") from None
        for key in reqs.unknown:
            click.echo(
                f'WARNING: Unit {name}: unrecognized requirement in [X-Fleet] section: "{key}"',
                err=True,
            )
        desired = "inactive" if info.is_template else target  # a template is never started
        puts.append((name, unit, desired))
        known[name] = {"name": name, "desiredState": desired, "options": _options(unit)}
        (created_global if reqs.is_global else created).append(name)

    errors = _send(client, [_put(n, options=_options(u), desired_state=d) for n, u, d in puts])
    for (name, _, _), err in zip(puts, errors, strict=True):
        if err is not None:
            raise _api_failure(f"Error creating units: failed creating unit {name}", err)

    # fleet printed this line once its new unit was inactive, which it always was at once (a
    # unit is created inactive there); the line is kept. Units created in their target state
    # are waited for like the replaced ones, though their desired state does not change.
    for name in created + created_global:
        click.echo(f"Unit {name} inactive")
    return replaced + [n for n, _, d in puts if d != "inactive" and n not in replaced], known


def _put(
    name: str, *, options: list[dict[str, str]] | None = None, desired_state: str | None = None
) -> dict[str, Any]:
    """A unit PUT of a batch (see `_send`)."""
    body: dict[str, Any] = {"name": name}
    if options is not None:
        body["options"] = options
    if desired_state is not None:
        body["desiredState"] = desired_state
    return {"method": "PUT", "name": name, "body": body}


def _send(client: Any, requests: list[dict[str, Any]]) -> list[Any]:
    """Send unit requests (`_put`, or DELETEs): several go as one batch (fleetd's `x/units`),
    or one request each, a few at a time, to a server without it. Returns, in order, None or
    the APIError of each; a DELETE of a unit already gone counts as done."""
    from fleetd.api.client import APIError, Unreachable

    if len(requests) > 1:
        chunks = [requests[i : i + _BATCH] for i in range(0, len(requests), _BATCH)]

        def batch(chunk: list[dict[str, Any]]) -> list[Any]:
            try:
                return client.batch(chunk)
            except APIError as err:
                if err.code == 404 and not isinstance(err, Unreachable):
                    raise
                return [err] * len(chunk)  # each failed as its batch did

        try:
            errors = [e for answers in _parallel([lambda c=c: batch(c) for c in chunks])
                      for e in answers]  # fmt: skip
        except APIError:
            pass  # no x/units on this server: one request per unit
        else:
            return [
                None if e is not None and e.code == 404 and r["method"] == "DELETE" else e
                for r, e in zip(requests, errors, strict=True)
            ]

    def one(request: dict[str, Any]) -> Any:
        try:
            if request["method"] == "DELETE":
                client.destroy_unit(request["name"])
            else:
                body = request["body"]
                client.put_unit(
                    request["name"],
                    options=body.get("options"),
                    desired_state=body.get("desiredState"),
                )
        except APIError as err:
            return err
        return None

    return _parallel([lambda r=r: one(r) for r in requests])


def _set_target(
    names: list[str],
    state: str,
    *,
    also: list[str],
    known: dict[str, dict[str, Any]] | None = None,
    already: list[str] | None = None,
) -> tuple[list[str], list[str]]:
    """fleet's setTargetStateOfUnits: set the desired state of every unit not already there.

    Returns (non-global units to wait for, global units triggered). Units in `also` (just
    replaced) are waited for even when their desired state was already `state`. Non-global
    units already there go in `already` (when given): fleet printed nothing for them, but one
    that failed there must not pass for fine.
    """
    from fleetd.api.client import APIError

    client = settings().client()
    names = list(dict.fromkeys(names))
    if known is None:
        try:
            known = _lookup(client, names)
        except APIError as err:
            raise _api_failure("Error retrieving units from registry", err) from None
    waiting: list[str] = []
    globals_: list[str] = []
    changes: list[str] = []
    for name in names:
        unit = known.get(name)
        if unit is None:
            raise Failure(f"unable to find unit {name}")
        if unit.get("desiredState") != state:
            changes.append(name)
        elif name not in also:
            if already is not None and not is_global(unit):
                already.append(name)
            continue
        (globals_ if is_global(unit) else waiting).append(name)

    errors = _send(client, [_put(n, desired_state=state) for n in changes])
    for name, err in zip(changes, errors, strict=True):
        if err is not None:
            raise _api_failure(f"Error setting target state of unit {name}", err)
    return waiting, globals_


# A command naming more units than this lists the registry once instead of asking per unit.
_LIST_ABOVE = 8
_WORKERS = 16  # requests in flight at once for commands over many units
_BATCH = 100  # unit requests per batch (several batches in flight: each within the timeout)


def _lookup(client: Any, names: list[str]) -> dict[str, dict[str, Any]]:
    """The registered units among `names`: one listing for many names, else one GET each."""
    names = list(dict.fromkeys(names))
    if len(names) > _LIST_ABOVE:
        wanted = set(names)
        return {u["name"]: u for u in client.units() if u["name"] in wanted}
    found = _parallel([lambda n=n: client.unit(n) for n in names])
    return {name: unit for name, unit in zip(names, found, strict=True) if unit is not None}


def _parallel(calls: list[Any]) -> list[Any]:
    """Run the calls (API requests) a few at a time; results in order; the first error (in
    the calls' order) is raised once all have finished."""
    if len(calls) <= 1:
        return [call() for call in calls]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(_WORKERS, len(calls))) as pool:
        futures = [pool.submit(call) for call in calls]
    return [future.result() for future in futures]


def _find_units(args: tuple[str, ...]) -> list[dict[str, Any]]:
    """The registered units the arguments name (unknown names are skipped, as in fleet)."""
    from fleetd.unit import mangle_name

    by_name = {u["name"]: u for u in settings().client().units()}
    wanted = dict.fromkeys(mangle_name(a) for a in args)
    return [by_name[n] for n in wanted if n in by_name]


_block_options = [
    click.option(
        "--no-block",
        is_flag=True,
        help="Do not wait until the units have reached the requested state.",
    ),
    click.option(
        "--block-attempts",
        type=int,
        default=0,
        show_default=True,
        help="Wait until the units reach the requested state, at most N x 2 s (0: forever).",
    ),
]
_lines_option = click.option(
    "--lines",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Journal lines to show of each unit that failed (0: none).",
)
_settle_option = click.option(
    "--settle",
    type=click.FloatRange(min=0, max=600),
    default=DEFAULT_SETTLE,
    show_default=True,
    help="Seconds a newly started simple service must stay active before it counts as "
    "launched (a process that dies at once is a failure); 0 turns it off.",
)
_replace_option = click.option(
    "--replace", is_flag=True, help="Replace the unit in the registry if the local file differs."
)


def _with(options: list[Any]) -> Any:
    def decorate(f: Any) -> Any:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


@click.command(help="Upload one or more units to the cluster without starting them")
@_replace_option
@click.argument("units", nargs=-1)
def submit(units: tuple[str, ...], replace: bool) -> None:
    _require_args(units)
    _lazy_create("submit", units, replace=replace)


@click.command(
    help="Schedule one or more units in the cluster, first submitting them if necessary."
)
@_with(_block_options)
@_lines_option
@_replace_option
@click.argument("units", nargs=-1)
def load(
    units: tuple[str, ...], no_block: bool, block_attempts: int, lines: int, replace: bool
) -> None:
    from fleetd.unit import mangle_name

    _require_args(units)
    timeout = block_timeout(no_block, block_attempts)
    again, known = _lazy_create("load", units, replace=replace, target="loaded")
    already: list[str] = []
    waiting, globals_ = _set_target(
        [mangle_name(u) for u in units], "loaded", also=again, known=known, already=already
    )
    for name in globals_:
        click.echo(f"Triggered global unit {name} load")
    if timeout is False:
        triggered(waiting, "load")
        return
    report_wait_errors(
        wait_for_units(
            waiting + already, "loaded", timeout=timeout, lines=lines, quiet=frozenset(already)
        )
    )


@click.command(
    help="Instruct systemd to start one or more units in the cluster, first submitting and "
    "loading if necessary."
)
@_with(_block_options)
@_lines_option
@_settle_option
@_replace_option
@click.argument("units", nargs=-1)
def start(
    units: tuple[str, ...],
    no_block: bool,
    block_attempts: int,
    lines: int,
    settle: float,
    replace: bool,
) -> None:
    from fleetd.unit import mangle_name

    _require_args(units)
    timeout = block_timeout(no_block, block_attempts)
    again, known = _lazy_create("start", units, replace=replace, target="launched")
    already: list[str] = []
    waiting, globals_ = _set_target(
        [mangle_name(u) for u in units], "launched", also=again, known=known, already=already
    )
    for name in globals_:
        click.echo(f"Triggered global unit {name} start")
    if timeout is False:
        triggered(waiting, "start")
        return
    report_wait_errors(
        wait_for_units(
            waiting + already, "launched", timeout=timeout, active=True, lines=lines,
            settle=settle, quiet=frozenset(already),
        )
    )


def _stop_or_unload(
    args: tuple[str, ...], *, verb: str, state: str, done: str, no_block: bool, block_attempts: int
) -> None:

    _require_args(args)
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
    errors = _send(client, [_put(u["name"], desired_state=state) for u in changes])
    waiting: list[str] = []
    for unit, err in zip(changes, errors, strict=True):
        name = unit["name"]
        if err is not None:
            raise _api_failure(f"Error setting target state of unit {name}", err)
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
@_with(_block_options)
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
@_with(_block_options)
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
@_with(_block_options)
@click.argument("units", nargs=-1)
def destroy(units: tuple[str, ...], no_block: bool, block_attempts: int) -> None:
    # Deleting is synchronous in the registry: when destroy_unit returns, the unit is gone, so
    # there is nothing to wait for; --no-block/--block-attempts are accepted for fleet's sake.

    _require_args(units)
    found = _find_units(units)
    if not found:
        click.echo("Units not found in registry", err=True)
        return  # nothing left to destroy: the requested end state holds (exit 0, as fleet)
    client = settings().client()
    answers = _send(client, [{"method": "DELETE", "name": u["name"]} for u in found])
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
        raise _api_failure(f"Error retrieving the states of unit {name}", err) from None
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
        raise _api_failure("Error retrieving the machines", err) from None

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
@_with(_block_options)
@_lines_option
@_settle_option
@click.argument("units", nargs=-1)
def restart(
    units: tuple[str, ...], no_block: bool, block_attempts: int, lines: int, settle: float
) -> None:
    from fleetd.api.client import APIError

    _require_args(units)
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
                raise _api_failure(f"Error setting target state for unit {name}", err) from None
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
        emit_json({"name": name, "hash": uf.hash, "options": _options(uf), "text": uf.serialize()})
    else:
        click.echo(uf.serialize(), nl=False)


COMMANDS = [submit, cat, load, start, restart, stop, unload, destroy]
