"""The list commands: list-units, list-unit-files, list-machines (tables or --output json).

Units that want a machine and have none are never rows of list-units (they have no state):
its table stays fleet's, and a line on stderr names them. list-unit-files shows why in a REASON
column (`-l`/`--full`, `--fields reason`, `--output json`), asked of fleetd's `x/unplaced` only
when a listed unit has no machine, so fleet's output is unchanged otherwise. list-machines
keeps the machines' facts (`fleet.*` metadata) out of its METADATA column: they are its FACTS
column (`--fields machine,ip,metadata,facts`), which `--output json` adds to the default fields;
and their capacity and use (fleetd's `x/machines`: `--fields cpus,memory-free,...`), which `-l`
adds as CPU-USE and MEMORY-USE columns only when some unit of the cluster reserves memory or
CPUs, so a fleet cluster's output stays fleet's. Its STATE column (cordoned, draining, drained:
fleetd's `x/cordons`) is asked for with `--fields machine,ip,metadata,state`; `--output json`
adds it to the default fields when some machine is cordoned (a table's `-l` asks nothing more
than the use columns: one request beyond fleet's).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import click

from fleetd.cli.context import Failure, emit_json, settings
from fleetd.cli.output import (
    DEFAULT_FIELDS,
    FIELDS_MACHINES,
    FIELDS_UNIT_FILES,
    FIELDS_UNITS,
    USE_FIELDS,
    VALUES_MACHINES,
    Column,
    FieldError,
    json_rows,
    parse_fields,
    table,
    wants_machine,
)

__all__ = ["COMMANDS"]


def _list_options(command: str, valid: Mapping[str, Column], *, short_full: bool = True) -> Any:
    keys = ",".join(sorted(valid))
    full_decls = ("-l", "--full") if short_full else ("--full", "-l")
    options = [
        click.option(*full_decls, "full", is_flag=True, help="Do not ellipsize fields on output"),
        click.option("--no-legend", is_flag=True, help="Do not print a legend (column headers)"),
        click.option(
            "--fields",
            default=DEFAULT_FIELDS[command],
            show_default=True,
            help=f'Columns to print. Valid fields are "{keys}"',
        ),
        click.option(
            "--output",
            type=click.Choice(["table", "json"]),
            default="table",
            show_default=True,
            help="table (fleet's layout) or json (the same cells, keyed by field).",
        ),
    ]

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def _fields(spec: str, valid: Mapping[str, Column]) -> list[str]:
    try:
        return parse_fields(spec, valid)
    except FieldError as err:
        raise Failure(str(err)) from None


def _ips() -> dict[str, str]:
    return {m["id"]: m.get("primaryIP") or "" for m in settings().client().machines()}


def _show(
    rows: list[Any],
    cols: list[str],
    valid: Mapping[str, Column],
    *,
    full: bool,
    no_legend: bool,
    output: str,
    ips: Mapping[str, str],
) -> None:
    if output == "json":
        emit_json(json_rows(rows, cols, valid, full=full, ips=ips))
    else:
        click.echo(table(rows, cols, valid, full=full, legend=not no_legend, ips=ips), nl=False)


def _fetch(call: Callable[[], list[Any]], prefix: str, suffix: str = "") -> list[Any]:
    """Call the API; an API error becomes fleet's message (unreachable is left to main())."""
    from fleetd.api.client import APIError, Unreachable

    try:
        return call()
    except Unreachable:
        raise
    except APIError as err:
        raise Failure(f"{prefix}{err.message}{suffix}") from None


def _unplaced(client: Any) -> dict[str, str] | None:
    """Every unit that wants a machine and has none, with why (fleetd's `x/unplaced`); None
    when the API cannot say (a fleet without the extension, or an error: the listing stands)."""
    from fleetd.api.client import APIError

    try:
        return client.unplaced()
    except APIError:
        return None


# unplaced units list-units names on stderr, at most
_NAMED = 5


def unplaced_line(names: list[str]) -> str:
    """list-units' line on stderr for the units that have no machine (and so no row)."""
    shown = ", ".join(names[:_NAMED])
    if len(names) > _NAMED:
        shown += f" and {len(names) - _NAMED} more"
    verb = "unit is" if len(names) == 1 else "units are"
    return f"{len(names)} {verb} not placed on any machine: {shown} (see fleetctl why UNIT)"


@click.command("list-units", help="List the current state of units in the cluster")
@_list_options("list-units", FIELDS_UNITS)
def list_units(full: bool, no_legend: bool, fields: str, output: str) -> None:
    cols = _fields(fields, FIELDS_UNITS)
    client = settings().client()
    states = _fetch(client.states, "Error retrieving list of units from repository: ")
    states.sort(key=lambda s: (s.get("name") or "", s.get("machineID") or ""))
    ips = _ips() if "machine" in cols else {}
    _show(states, cols, FIELDS_UNITS, full=full, no_legend=no_legend, output=output, ips=ips)
    if output == "table" and not no_legend:  # a legend of sorts: not for scripts
        unplaced = _unplaced(client)
        if unplaced:
            click.echo(unplaced_line(sorted(unplaced)), err=True)


@click.command("list-unit-files", help="List the units that exist in the cluster.")
@_list_options("list-unit-files", FIELDS_UNIT_FILES, short_full=False)
def list_unit_files(full: bool, no_legend: bool, fields: str, output: str) -> None:
    cols = _fields(fields, FIELDS_UNIT_FILES)
    if "tmachine" in cols:
        click.echo('WARNING: The "tmachine" field is deprecated. Use "target" instead', err=True)
    client = settings().client()
    units = _fetch(client.units, "Error retrieving list of units from repository: ")
    units.sort(key=lambda u: u.get("name") or "")
    if any(wants_machine(u) for u in units):
        default = fields == DEFAULT_FIELDS["list-unit-files"]
        shown = "reason" in cols or (default and (full or output == "json"))
        reasons = _unplaced(client) if shown else None
        if reasons and any(u["name"] in reasons for u in units if wants_machine(u)):
            units = [
                dict(u, reason=reasons.get(u["name"], "")) if wants_machine(u) else u for u in units
            ]
            if "reason" not in cols:
                cols = [*cols, "reason"]
    ips = _ips() if {"target", "tmachine"} & set(cols) else {}
    _show(units, cols, FIELDS_UNIT_FILES, full=full, no_legend=no_legend, output=output, ips=ips)


def _machines_use(client: Any) -> dict[str, Any] | None:
    """Each machine's capacity and use (fleetd's `x/machines`); None when the API cannot say
    (a fleet without the extension, or an error: the listing stands)."""
    from fleetd.api.client import APIError

    try:
        return client.machines_use()
    except APIError:
        return None


# What -l adds to the default fields when some unit of the cluster reserves: the use columns in
# a table, the numbers in json.
_USE_COLUMNS = ["cpu-use", "memory-use"]
_USE_NUMBERS = ["cpus", "cpus-reserved", "cpus-free", "memory", "memory-reserved",
                "memory-free", "overcommitted"]  # fmt: skip


def _cordons(client: Any) -> dict[str, str] | None:
    """Each cordoned machine's state (fleetd's `x/cordons`); None when the API cannot say."""
    from fleetd.api.client import APIError

    try:
        return {c.get("machine") or "": c.get("state") or "" for c in client.cordons()}
    except APIError:
        return None


@click.command("list-machines", help="Enumerate the current hosts in the cluster")
@_list_options("list-machines", FIELDS_MACHINES)
def list_machines(full: bool, no_legend: bool, fields: str, output: str) -> None:
    cols = _fields(fields, FIELDS_MACHINES)
    default = fields == DEFAULT_FIELDS["list-machines"]
    if output == "json" and default:
        cols = [*cols, "facts"]  # the table leaves them out: scripts split its columns
    client = settings().client()
    machines = _fetch(
        client.machines,
        "Error retrieving list of active machines from fleet API (",
        ")",
    )
    machines.sort(key=lambda m: m.get("id") or "")
    asked = bool(USE_FIELDS & set(cols))
    if asked or (full and default):  # one more request, only then
        use = _machines_use(client)
        if use is not None:
            by_id = use.get("machines") or {}
            machines = [dict(m, use=by_id.get(m.get("id"))) for m in machines]
            if not asked and use.get("reservingUnits"):  # else fleet's table, byte for byte
                cols = [*cols, *(_USE_NUMBERS if output == "json" else _USE_COLUMNS)]
    if "state" in cols or (default and output == "json"):  # one more request
        cordons = _cordons(client)
        if cordons is not None:
            machines = [dict(m, cordon=cordons.get(m.get("id") or "")) for m in machines]
            if "state" not in cols and cordons:  # else the json as it was
                at = cols.index("metadata") + 1 if "metadata" in cols else len(cols)
                cols = [*cols[:at], "state", *cols[at:]]
    if output == "json":
        emit_json(json_rows(machines, cols, FIELDS_MACHINES, full=full, ips={},
                            values=VALUES_MACHINES))  # fmt: skip
    else:
        _show(machines, cols, FIELDS_MACHINES, full=full, no_legend=no_legend, output=output,
              ips={})  # fmt: skip


COMMANDS = [list_units, list_unit_files, list_machines]
