"""What `fleetctl submit`, `load` and `start` do, decided before anything is sent.

fleet's lazyCreateUnits (which units to create, which to replace, what to warn of) and then its
setTargetStateOfUnits (whose desired state to set, what to wait for), as one pure function: the
CLI reads the local files and asks the API about the named units first, hands both to
`plan_submit`, then executes the plan — writes, sets, waits — and prints its lines. So every
rule of these commands can be tested on plain values, and a refusal changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from fleetd.unit import (
    UNIT_TYPES,
    UnitFile,
    UnitName,
    UnitNameError,
    UnitValidationError,
    mangle_name,
    parse_name,
)

__all__ = [
    "REPLACEABLE",
    "TARGET_STATE",
    "Argument",
    "Line",
    "LocalFile",
    "Registered",
    "SubmitPlan",
    "Wait",
    "Write",
    "names_to_look_up",
    "plan_submit",
    "template_rollouts",
    "unit_suffix_problem",
]

# The desired state each command brings its units to (a submitted unit stays inactive).
TARGET_STATE = {"submit": "inactive", "load": "loaded", "start": "launched"}
# fleet's checkReplaceUnitState: the desired states a unit may be replaced in, per command.
REPLACEABLE = {
    "submit": frozenset({"inactive"}),
    "load": frozenset({"inactive", "loaded"}),
    "start": frozenset({"inactive", "loaded", "launched"}),
}


@dataclass(frozen=True)
class LocalFile:
    """A unit file fleetctl found on disk for an argument."""

    path: str  # the file read: the argument's own (`hello` -> hello.service) or its template
    unit: UnitFile | None  # None: it exists but cannot be read or parsed
    problem: str = ""  # then why: `/abs/path: why` (the OS's words, or the parser's line)
    template: bool = False  # the template next to the argument, not the argument's own file


@dataclass(frozen=True)
class Argument:
    """A command-line argument and what is on disk for it: its own file, else (an instance
    `p@i.s`) the template `p@.s` next to it; when neither exists, where fleetctl looked."""

    text: str  # as given: `units/hello`, `apache@80.service`
    local: LocalFile | None = None
    looked_at: tuple[str, ...] = ()  # `looked for file /abs/path`, for fleet's "not found"


@dataclass(frozen=True)
class Registered:
    """A unit the API reported."""

    unit: UnitFile
    desired: str = "inactive"  # fleet's desiredState: inactive, loaded, launched


@dataclass(frozen=True)
class Line:
    """A line to print: on stdout, or on stderr (fleet's warnings)."""

    text: str
    stderr: bool = False


@dataclass(frozen=True)
class Write:
    """A unit to create in the desired state `desired`, or to replace with new content
    (`desired` empty: the unit keeps its desired state)."""

    name: str
    unit: UnitFile
    desired: str = ""


@dataclass(frozen=True)
class Wait:
    """Units to wait for until they report `state`; the `quiet` ones were there already, so
    only a failure of theirs is printed."""

    units: tuple[str, ...]
    state: str
    quiet: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SubmitPlan:
    """What a submit/load/start does, in the order the CLI does it."""

    notes: tuple[Line, ...] = ()  # printed before anything is sent (warnings, nothing to do)
    refusal: str = ""  # when set, the command fails with it and sends nothing
    writes: tuple[Write, ...] = ()  # sent together; the first failure ends the command
    written: tuple[Line, ...] = ()  # printed once the writes succeeded
    state: str = ""  # the desired state `set` is brought to (none for submit)
    set: tuple[str, ...] = ()  # units whose desired state is set to `state`, after the writes
    triggered: tuple[Line, ...] = ()  # printed once the states are set
    wait: Wait | None = None  # None: nothing to wait for (submit, --no-block)


def names_to_look_up(args: Iterable[str]) -> list[str]:
    """The units to ask the API about before planning: each argument's unit and, for an
    instance, its template (an instance with no file of its own is made from the registry's
    template). Names that are no unit name are left out: the plan refuses them."""
    names: dict[str, None] = {}
    for arg in args:
        try:
            info = parse_name(mangle_name(arg))
        except UnitNameError:
            continue
        names[info.full] = None
        if info.is_instance:
            names[info.template] = None
    return list(names)


class _Refused(Exception):
    """Ends the planning: the command fails with this message and sends nothing."""


def plan_submit(
    command: str,
    args: Sequence[Argument],
    registered: Mapping[str, Registered],
    *,
    replace: bool = False,
    block: bool = True,
) -> SubmitPlan:
    """The plan of `fleetctl <command> [--replace] [--no-block] args...` (command: submit,
    load or start), given the arguments with their local files and the units the API reported
    among `names_to_look_up(args)`.

    A new unit is created already in the command's desired state: fleet created it inactive
    and set the state in a second request; one request does both here (a non-global unit is
    placed as soon as it exists). Such a unit, and a replaced one, is waited for though its
    desired state does not change. A unit already in the state is waited for quietly: fleet
    printed nothing for it, but one that failed there must not pass for fine.
    """
    target = TARGET_STATE[command]
    notes: list[Line] = []
    writes: list[Write] = []
    # The units the states are then set on: the registered ones and those created (a replaced
    # unit keeps its registered entry, so its Global-ness is the one the registry knew).
    after: dict[str, Registered] = dict(registered)
    try:
        seen: set[str] = set()
        for arg in args:
            name = mangle_name(arg.text)
            if name not in seen:
                seen.add(name)
                info = _unit_name(arg.text, name, command)
                existing = registered.get(name)
                if existing is None:  # its template may be one created just before it
                    write = _new_unit(arg, info, after, target, notes)
                    after[name] = Registered(write.unit, write.desired)
                else:
                    write = _registered_unit(arg, name, existing, command, replace, notes)
                if write is not None:
                    writes.append(write)
    except _Refused as refusal:
        return SubmitPlan(notes=tuple(notes), refusal=str(refusal))

    # fleet printed this line once its new unit was inactive, which it always was at once (a
    # unit is created inactive there); the line is kept, the non-global units first.
    created = [w for w in writes if w.desired]
    created.sort(key=lambda w: _is_global(w.name, after[w.name]))
    plan = SubmitPlan(
        notes=tuple(notes),
        writes=tuple(writes),
        written=tuple(Line(f"Unit {w.name} inactive") for w in created),
    )
    if command == "submit":
        return plan
    return _set_target(plan, args, after, target, command, block)


def _unit_name(text: str, name: str, command: str) -> UnitName:
    """The unit an argument names, or the refusal of an argument that names none."""
    if text.rsplit("/", 1)[-1] in ("", ".", ".."):  # a directory: no unit file named
        raise _Refused(f'Error creating units: argument "{text}" names no unit')
    try:
        info = parse_name(name)
    except UnitNameError as err:
        raise _Refused(f"Error creating units: {err}") from None
    if info.is_template and TARGET_STATE[command] != "inactive":
        raise _Refused(
            f'Error creating units: cannot activate template "{name}": {command} an '
            f"instance of it, e.g. {info.prefix}@1.{info.type}"
        )
    return info


def _new_unit(
    arg: Argument,
    info: UnitName,
    known: Mapping[str, Registered],
    target: str,
    notes: list[Line],
) -> Write:
    """A unit not in the registry yet, from fleet's sources in fleet's order: the argument's
    own file; for an instance, the registry's template, then the template file next to it."""
    name, local = info.full, arg.local
    template = known.get(info.template) if info.is_instance else None
    if local is not None and local.template and template is not None:
        local = None  # an instance without a file of its own: the registry's template wins
    if local is not None:
        if local.unit is None:  # the file (or template) exists but cannot be read
            raise _Refused(
                f"Error creating units: failed getting Unit({name}) from file {local.problem}"
            )
        unit = local.unit
    elif template is not None:
        unit = template.unit
    else:
        raise _Refused(f"Error creating units: {_not_found(arg, info)}")
    reqs = unit.requirements(name)
    try:
        reqs.validate()
    except UnitValidationError as err:
        raise _Refused(f"Error creating units: failed creating unit {name}: {err}") from None
    for key in reqs.unknown:
        notes.append(
            Line(f'WARNING: Unit {name}: unrecognized requirement in [X-Fleet] section: "{key}"',
                 stderr=True)
        )  # fmt: skip
    return Write(name, unit, "inactive" if info.is_template else target)  # never a template run


def _not_found(arg: Argument, info: UnitName) -> str:
    """fleet's message for a unit found neither in the registry nor on disk."""
    looked = ", ".join(arg.looked_at)
    if info.is_instance:
        what = f"template Unit({info.template})"
    else:  # `hello.srvice` meant `hello.srvice.service`; an instance may hold dots (`etcd@1.2`)
        suffix = unit_suffix_problem(arg.text)
        if suffix:
            return suffix
        what = f"Unit({info.full})"
    return f"unable to find {what} in Registry or on filesystem ({looked})"


def _registered_unit(
    arg: Argument,
    name: str,
    existing: Registered,
    command: str,
    replace: bool,
    notes: list[Line],
) -> Write | None:
    """A unit already in the registry: compared with its local file (fleet's
    isLocalUnitDifferent), replaced with it when --replace allows; else used as it is."""
    local = arg.local
    if local is not None and local.unit is None:
        if replace:  # the file to replace the unit with is unusable: say why
            raise _Refused(
                f"Error creating units: failed getting Unit({name}) from file {local.problem}"
            )
        local = None  # as fleet: the registered unit is used, the file not compared
    if local is None or local.unit is None:  # (the second test only tells the type checker)
        if replace:
            raise _Refused(
                f"Error creating units: unable to find a local file for Unit({name}) "
                "to replace it with"
            )
        return None  # in the registry, nothing local to compare: use it as it is
    if local.unit.hash == existing.unit.hash:
        if replace:
            notes.append(Line(f"Found same Unit({name}) in Registry, nothing to do"))
        return None
    if not replace:
        kind = "template unit file" if local.template else "unit file"
        notes.append(
            Line(f"WARNING: Unit {name} in registry differs from local {kind} {arg.text}. "
                 "Add --replace to override.", stderr=True)
        )  # fmt: skip
        return None
    if existing.desired not in REPLACEABLE[command]:
        notes.append(
            Line(f"Warning: can not replace Unit({name}) in state '{existing.desired}', "
                 "use the appropriate command", stderr=True)
        )  # fmt: skip
        return None
    return Write(name, local.unit)


def _set_target(
    plan: SubmitPlan,
    args: Sequence[Argument],
    after: Mapping[str, Registered],
    state: str,
    verb: str,
    block: bool,
) -> SubmitPlan:
    """fleet's setTargetStateOfUnits after the writes: the desired state of every named unit
    not in `state` yet is set; Global units are only said to be triggered (they run on many
    machines, nothing waits for them), the others are waited for."""
    written = {w.name for w in plan.writes}
    changes: list[str] = []
    waiting: list[str] = []
    already: list[str] = []
    triggered: list[Line] = []
    for name in dict.fromkeys(mangle_name(arg.text) for arg in args):
        unit = after[name]
        is_global = _is_global(name, unit)
        if unit.desired != state:
            changes.append(name)
        elif name not in written:  # there already, and not created or replaced just now
            if not is_global:
                already.append(name)
            continue
        if is_global:
            triggered.append(Line(f"Triggered global unit {name} {verb}"))
        else:
            waiting.append(name)
    wait = None
    if not block:
        triggered += [Line(f"Triggered unit {name} {verb}") for name in waiting]
    elif waiting or already:
        wait = Wait((*waiting, *already), state, frozenset(already))
    return SubmitPlan(
        notes=plan.notes, writes=plan.writes, written=plan.written,
        state=state, set=tuple(changes), triggered=tuple(triggered), wait=wait,
    )  # fmt: skip


def _is_global(name: str, unit: Registered) -> bool:
    return unit.unit.requirements(name).is_global


def unit_suffix_problem(arg: str) -> str | None:
    """What is wrong with an argument whose suffix is no unit type (`hello.srvice`), else None.

    Such an argument means `hello.srvice.service` (fleet appends `.service`); when no such
    unit exists this says what the user most likely got wrong instead of "not found".
    """
    base = arg.rstrip("/").rsplit("/", 1)[-1]
    dot = base.rfind(".")
    if dot <= 0 or base[dot + 1 :] in UNIT_TYPES:
        return None
    valid = ", ".join(f".{t}" for t in sorted(UNIT_TYPES))
    return f"{arg} has no valid unit suffix ({valid})"


def template_rollouts(
    writes: Sequence[Write], launched: Iterable[str]
) -> dict[str, tuple[Write, ...]]:
    """The replacements of a plan that roll a template's new version out instead
    (docs/rolling-updates.md): by template, the replaced instances when they are every launched
    instance of that template (`launched`: the names of the launched units) — at least two —
    with the same new content. Any other replacement goes as fleet's, at once."""
    groups: dict[str, list[Write]] = {}
    for write in writes:
        if write.desired:  # created, not replaced
            continue
        try:
            name = parse_name(write.name)
        except UnitNameError:
            continue
        if name.is_instance:
            groups.setdefault(name.template, []).append(write)
    running: dict[str, set[str]] = {}
    for unit in launched:
        try:
            name = parse_name(unit)
        except UnitNameError:
            continue
        if name.is_instance and name.template in groups:
            running.setdefault(name.template, set()).add(unit)
    return {
        template: tuple(group)
        for template, group in sorted(groups.items())
        if len(group) >= 2
        and len({w.unit.hash for w in group}) == 1
        and {w.name for w in group} == running.get(template)
    }
