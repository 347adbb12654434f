"""How fleetctl prints: Go tabwriter tables, machine legends, the columns of each list.

Pure: no I/O, no client. Every function takes the API's JSON dicts and returns text, so the
layout can be checked byte for byte against what fleet 1.0 printed (tests/cli/test_output.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "FIELDS_MACHINES",
    "FIELDS_UNITS",
    "FIELDS_UNIT_FILES",
    "USE_FIELDS",
    "VALUES_MACHINES",
    "FieldError",
    "is_global",
    "listed_unit",
    "machine_full_legend",
    "machine_id_legend",
    "metadata_text",
    "parse_fields",
    "show_cpus",
    "show_memory",
    "tabwrite",
    "unit_file_of",
    "wants_machine",
]

TAB_WIDTH = 8
PADDING = 1

Row = Mapping[str, Any]


class FieldError(ValueError):
    """A --fields value fleet would refuse; str() is fleet's message."""


def tabwrite(rows: Sequence[Sequence[str]]) -> str:
    """Lay out rows as Go's tabwriter.NewWriter(out, 0, 8, 1, '\\t', 0) does.

    Every cell but the last of a line ends a column; a column is as wide as its widest cell
    plus the padding, rounded up to a multiple of the tab width, and a cell is followed by as
    many TABs as it takes to reach that width. The last cell is written as it is.
    """
    widths: list[int] = []
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            if i == len(widths):
                widths.append(0)
            widths[i] = max(widths[i], len(cell) + PADDING)
    widths = [-(-w // TAB_WIDTH) * TAB_WIDTH for w in widths]
    lines = []
    for row in rows:
        parts = []
        for i, cell in enumerate(row):
            parts.append(cell)
            if i < len(row) - 1:
                parts.append("\t" * -(-(widths[i] - len(cell)) // TAB_WIDTH))
        lines.append("".join(parts) + "\n")
    return "".join(lines)


# --------------------------------------------------------------------------------------------
# Machines


def machine_id_legend(machine_id: str, *, full: bool) -> str:
    """`5ab7f3b4...`, or the whole ID with --full."""
    from fleetd.unit import short_id  # here, so `fleetctl version` loads no unit model

    return machine_id if full else f"{short_id(machine_id)}..."


def machine_full_legend(machine_id: str, ip: str, *, full: bool) -> str:
    """`5ab7f3b4.../127.0.0.11` (no `/ip` when the IP is unknown)."""
    legend = machine_id_legend(machine_id, full=full)
    return f"{legend}/{ip}" if ip else legend


def metadata_text(metadata: Mapping[str, str] | None, *, facts: bool = False) -> str:
    """`k=v` pairs sorted by key, joined with `,`; `-` when there are none. The machine's
    metadata without its facts (fleet's METADATA column), or with `facts` its facts only (the
    `fleet.*` keys fleetd measures)."""
    from fleetd.rules.metadata import RESERVED_PREFIX  # here, as short_id above

    pairs = sorted(
        (k, v) for k, v in (metadata or {}).items() if k.startswith(RESERVED_PREFIX) == facts
    )
    return ",".join(f"{k}={v}" for k, v in pairs) or "-"


# --------------------------------------------------------------------------------------------
# Units


def unit_file_of(unit: Row) -> Any:
    """The UnitFile of an API unit (parsed once per distinct content: a table asks for it in
    several columns of each row, and many units share one file)."""
    options = unit.get("options") or ()
    return _unit_file(tuple((o["section"], o["name"], o["value"]) for o in options))


@functools.lru_cache(maxsize=4096)
def _unit_file(options: tuple[tuple[str, str, str], ...]) -> Any:
    from fleetd.unit import UnitFile  # imported here so `fleetctl version` stays fast

    return UnitFile.from_options(options)


def is_global(unit: Row) -> bool:
    options = unit.get("options") or ()
    if not any(o["section"] == "X-Fleet" and o["name"] == "Global" for o in options):
        return False  # the common case, without reading the whole [X-Fleet] section
    return bool(unit_file_of(unit).requirements(unit["name"]).is_global)


def wants_machine(unit: Row) -> bool:
    """A unit that should have a machine and has none: desired loaded or launched, not Global,
    no machine (`fleetctl why` says why; list-units never shows it, it has no state)."""
    return (
        unit.get("desiredState") in ("loaded", "launched")
        and not unit.get("machineID")
        and not is_global(unit)
    )


def _dash(value: Any) -> str:
    text = "" if value is None else str(value)
    return text or "-"


# A column: (row, full, ips by machine ID) -> cell text. The row is a unit state (list-units),
# a unit (list-unit-files) or a machine (list-machines).
Column = Callable[[Row, bool, Mapping[str, str]], str]


def _state_machine(row: Row, full: bool, ips: Mapping[str, str]) -> str:
    mid = row.get("machineID") or ""
    return machine_full_legend(mid, ips.get(mid, ""), full=full) if mid else "-"


def _state_hash(row: Row, full: bool, _ips: Mapping[str, str]) -> str:
    value = row.get("hash") or ""
    return _dash(value if full else value[:7])


FIELDS_UNITS: dict[str, Column] = {
    "active": lambda r, f, i: _dash(r.get("systemdActiveState")),
    "hash": _state_hash,
    "load": lambda r, f, i: _dash(r.get("systemdLoadState")),
    "machine": _state_machine,
    "sub": lambda r, f, i: _dash(r.get("systemdSubState")),
    "unit": lambda r, f, i: _dash(r.get("name")),
}


def _unit_target(row: Row, full: bool, ips: Mapping[str, str]) -> str:
    if is_global(row):
        return "global"
    return _state_machine(row, full, ips)


def _unit_hash(row: Row, full: bool, _ips: Mapping[str, str]) -> str:
    digest = unit_file_of(row).hash
    return digest if full else digest[:7]


FIELDS_UNIT_FILES: dict[str, Column] = {
    "desc": lambda r, f, i: _dash(unit_file_of(r).description),
    "dstate": lambda r, f, i: _dash(r.get("desiredState")),
    "global": lambda r, f, i: "true" if is_global(r) else "false",
    "hash": _unit_hash,
    # why a unit that wants a machine has none (fleetd's x/unplaced, put in the row by the
    # command: `fleetd.cli.lists`); "-" for every other unit
    "reason": lambda r, f, i: _dash(r.get("reason")),
    "state": lambda r, f, i: "-" if is_global(r) else _dash(r.get("currentState")),
    "target": _unit_target,
    "tmachine": _unit_target,
    "unit": lambda r, f, i: _dash(r.get("name")),
}

# A machine's capacity and use (fleetd's `x/machines`, put in the row as "use" by the command:
# `fleetd.cli.lists`): what it offers to units, what its units reserve, what is free; numbers
# in --output json (None: the machine does not say, or the API could not tell).


def _amount(row: Row, dimension: str, key: str) -> Any:
    return ((row.get("use") or {}).get(dimension) or {}).get(key)


def show_cpus(n: float | None) -> str:
    """CPUs as fleetctl shows them: `4`, `1.5`; `-` when not known."""
    return "-" if n is None else f"{n:g}"


def show_memory(n: float | None) -> str:
    """Bytes as fleetctl shows them: `8G`, `1.5G`, `0`; `-` when not known."""
    if n is None:
        return "-"
    from fleetd.rules.resources import show_size  # here, as short_id above

    return show_size(n) if n else "0"


def _use(dimension: str, show: Callable[[float | None], str]) -> Column:
    """`reserved/capacity` (`1.5/4`, `2G/8G`), `!` after it when the units there reserve more
    than the machine offers; `-` when it says nothing and nothing is reserved there."""

    def cell(row: Row, full: bool, ips: Mapping[str, str]) -> str:
        capacity = _amount(row, dimension, "capacity")
        reserved = _amount(row, dimension, "reserved") or 0
        if capacity is None and not reserved:
            return "-"
        over = capacity is not None and reserved > capacity + 1e-9
        return f"{show(reserved)}/{show(capacity)}" + ("!" if over else "")

    return cell


def _number(dimension: str, key: str, show: Callable[[float | None], str]) -> Column:
    return lambda r, f, i: show(_amount(r, dimension, key))


def _overcommitted(row: Row) -> bool | None:
    return (row.get("use") or {}).get("overcommitted")


FIELDS_MACHINES: dict[str, Column] = {
    "ip": lambda r, f, i: _dash(r.get("primaryIP")),
    "machine": lambda r, f, i: machine_id_legend(r.get("id") or "", full=f),
    "metadata": lambda r, f, i: metadata_text(r.get("metadata")),
    # the machine's facts (`fleet.*` metadata): not a default column, so the table stays
    # fleet's; `--output json` adds it to the default fields (fleetd.cli.lists)
    "facts": lambda r, f, i: metadata_text(r.get("metadata"), facts=True),
    "cpus": _number("cpus", "capacity", show_cpus),
    "cpus-reserved": _number("cpus", "reserved", show_cpus),
    "cpus-free": _number("cpus", "free", show_cpus),
    "memory": _number("memory", "capacity", show_memory),
    "memory-reserved": _number("memory", "reserved", show_memory),
    "memory-free": _number("memory", "free", show_memory),
    "overcommitted": lambda r, f, i: _dash({True: "true", False: "false"}.get(_overcommitted(r))),
    # cordoned, draining or drained (fleetctl cordon/drain): `-l` adds it when some machine
    # is cordoned (fleetd.cli.lists)
    "state": lambda r, f, i: _dash(r.get("cordon")),
    # the columns `-l` adds when some unit of the cluster reserves (fleetd.cli.lists)
    "cpu-use": _use("cpus", show_cpus),
    "memory-use": _use("memory", show_memory),
}
# What --output json shows of them: numbers (bytes, CPUs), true/false, null when not known.
VALUES_MACHINES: dict[str, Callable[[Row], Any]] = {
    **{
        f"{dimension}{suffix}": functools.partial(_amount, dimension=dimension, key=key)
        for dimension in ("cpus", "memory")
        for suffix, key in (("", "capacity"), ("-reserved", "reserved"), ("-free", "free"))
    },
    "overcommitted": _overcommitted,
}
USE_FIELDS = frozenset({*VALUES_MACHINES, "cpu-use", "memory-use"})

DEFAULT_FIELDS = {
    "list-units": "unit,machine,active,sub",
    "list-unit-files": "unit,hash,dstate,state,target",
    "list-machines": "machine,ip,metadata",
}


def parse_fields(spec: str, valid: Mapping[str, Column]) -> list[str]:
    """Split a --fields value; FieldError with fleet's message on an unknown key."""
    if not spec:
        raise FieldError("Must define output format")
    cols = spec.split(",")
    for col in cols:
        if col not in valid:
            raise FieldError(f'Invalid key in output format: "{col}"')
    return cols


def table(
    rows: Sequence[Row],
    cols: Sequence[str],
    columns: Mapping[str, Column],
    *,
    full: bool,
    legend: bool,
    ips: Mapping[str, str],
) -> str:
    """The text of a list command: an upper-cased header (unless --no-legend), one line a row."""
    lines = [[c.upper() for c in cols]] if legend else []
    lines += [[columns[c](row, full, ips) for c in cols] for row in rows]
    return tabwrite(lines)


def json_rows(
    rows: Sequence[Row],
    cols: Sequence[str],
    columns: Mapping[str, Column],
    *,
    full: bool,
    ips: Mapping[str, str],
    values: Mapping[str, Callable[[Row], Any]] | None = None,
) -> list[dict[str, Any]]:
    """The same cells as the table, keyed by field name (for --output json); a field of
    `values` as that value instead (a number rather than its text)."""
    values = values or {}
    return [
        {c: values[c](row) if c in values else columns[c](row, full, ips) for c in cols}
        for row in rows
    ]


def listed_unit(unit: Row) -> Any:
    """What the planners of `fleetd.reconcile.lifecycle` and `.remote` read of an API unit."""
    from fleetd.reconcile.lifecycle import Listed

    return Listed(
        unit["name"],
        desired=unit.get("desiredState") or "",
        current=unit.get("currentState") or "",
        is_global=is_global(unit),
        machine=unit.get("machineID") or "",
    )
