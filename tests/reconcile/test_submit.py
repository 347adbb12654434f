"""The plan of fleetctl submit/load/start: what is created, replaced, set, waited for, said.

Every case is plain values: the arguments with what is on disk for them, the units the API
reported. The CLI that carries these plans out runs against a real cluster in tests/cli.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetd.reconcile.submit import (
    REPLACEABLE,
    Argument,
    Line,
    LocalFile,
    Registered,
    SubmitPlan,
    Wait,
    Write,
    names_to_look_up,
    plan_submit,
    template_rollouts,
    unit_suffix_problem,
)
from fleetd.unit import UnitFile, parse_unit


def seed(name: str) -> UnitFile:
    """One of the seed's unit files (examples/seed), the walkthrough's hello and apache@."""
    return parse_unit(
        (Path(__file__).resolve().parents[2] / "examples" / "seed" / name).read_text()
    )


HELLO, APACHE = seed("hello.service"), seed("apache@.service")
OTHER = parse_unit("[Service]\nExecStart=/bin/sleep 1000\n")
GLOBAL = parse_unit("[Service]\nExecStart=/bin/sleep 1000\n\n[X-Fleet]\nGlobal=true\n")


def own(text: str, unit: UnitFile) -> Argument:
    """An argument whose own file holds `unit`."""
    return Argument(text, LocalFile(text, unit))


def beside(text: str, template: UnitFile, path: str = "apache@.service") -> Argument:
    """An instance argument with no file of its own but its template file next to it."""
    return Argument(text, LocalFile(path, template, template=True))


def unreadable(text: str, *, template: bool = False) -> Argument:
    """An argument whose file (or template file) exists but cannot be parsed."""
    return Argument(text, LocalFile(text, None, f"/w/{text}: line 1: bad", template=template))


def missing(text: str, *paths: str) -> Argument:
    """An argument with nothing on disk: fleet's message names where it looked."""
    return Argument(text, looked_at=tuple(f"looked for file /w/{p}" for p in paths or (text,)))


def plan(command: str, *args: Argument, registered=None, **kw) -> SubmitPlan:
    return plan_submit(command, args, registered or {}, **kw)


def out(*texts: str) -> tuple[Line, ...]:
    return tuple(Line(t) for t in texts)


def warn(*texts: str) -> tuple[Line, ...]:
    return tuple(Line(t, stderr=True) for t in texts)


# --- what the API is asked about first -------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "names"),
    [
        pytest.param(["hello"], ["hello.service"], id="short-name"),
        # an instance may come from the registry's template: it is asked for too
        pytest.param(["units/apache@80.service"], ["apache@80.service", "apache@.service"],
                     id="instance-and-its-template"),
        # two instances share one template, asked for once
        pytest.param(["apache@1", "apache@2"],
                     ["apache@1.service", "apache@.service", "apache@2.service"], id="shared"),
        # a name that is no unit name is refused by the plan, never asked for
        pytest.param(["@x.service", "hello.service"], ["hello.service"], id="bad-name-left-out"),
        pytest.param(["hello", "hello.service"], ["hello.service"], id="same-unit-once"),
    ],
)  # fmt: skip
def test_names_to_look_up(args: list[str], names: list[str]) -> None:
    assert names_to_look_up(args) == names


# --- new units ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "desired", "wait"),
    [
        # submit leaves it inactive and waits for nothing
        pytest.param("submit", "inactive", None, id="submit"),
        # created already loaded (fleet: inactive, then a second request), then waited for
        pytest.param("load", "loaded", Wait(("hello.service",), "loaded"), id="load"),
        pytest.param("start", "launched", Wait(("hello.service",), "launched"), id="start"),
    ],
)
def test_a_new_unit_is_created_in_the_commands_state(
    command: str, desired: str, wait: Wait | None
) -> None:
    p = plan(command, own("units/hello", HELLO))
    assert p.writes == (Write("hello.service", HELLO, desired),)
    assert p.written == out("Unit hello.service inactive")  # fleet's line, kept as it was
    assert p.set == ()  # one request does both
    assert p.wait == wait


def test_submit_never_sets_a_state_or_waits() -> None:
    p = plan("submit", own("hello.service", HELLO), registered={"hello.service": Registered(OTHER)})
    assert (p.state, p.set, p.triggered, p.wait) == ("", (), (), None)


def test_a_template_may_be_submitted_and_stays_inactive() -> None:
    p = plan("submit", own("apache@.service", APACHE))
    assert p.writes == (Write("apache@.service", APACHE, "inactive"),)


@pytest.mark.parametrize(
    ("arg", "registered", "unit"),
    [
        # the instance's own file (a symlink to the template in the walkthrough) comes first
        pytest.param(own("apache@80.service", OTHER), {"apache@.service": Registered(APACHE)},
                     OTHER, id="own-file-first"),
        # no file of its own: the registry's template, before the template file next to it
        pytest.param(beside("apache@80.service", OTHER), {"apache@.service": Registered(APACHE)},
                     APACHE, id="registry-template-before-template-file"),
        # neither in the registry: the template file next to it
        pytest.param(beside("apache@80.service", APACHE), {}, APACHE, id="template-file"),
        # an unreadable template file is never read when the registry has the template
        pytest.param(unreadable("apache@80.service", template=True),
                     {"apache@.service": Registered(APACHE)}, APACHE,
                     id="registry-template-over-unreadable-file"),
        # only the registry has it
        pytest.param(missing("apache@80.service", "apache@80.service", "apache@.service"),
                     {"apache@.service": Registered(APACHE)}, APACHE, id="registry-template-only"),
    ],
)  # fmt: skip
def test_where_an_instance_comes_from(
    arg: Argument, registered: dict[str, Registered], unit: UnitFile
) -> None:
    p = plan("start", arg, registered=registered)
    assert p.refusal == ""
    assert p.writes == (Write("apache@80.service", unit, "launched"),)


def test_a_template_submitted_in_the_same_command_serves_the_next_instances() -> None:
    p = plan(
        "submit",
        own("templates/apache@.service", APACHE),
        missing("apache@1.service", "apache@1.service", "apache@.service"),
    )
    assert p.refusal == ""
    assert [w.name for w in p.writes] == ["apache@.service", "apache@1.service"]
    assert p.writes[1].unit == APACHE


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        pytest.param(missing("nosuch"), "unable to find Unit(nosuch.service) in Registry or on filesystem (looked for file /w/nosuch)", id="unit"),
        # an instance names its template and both paths looked at
        pytest.param(missing("apache@80.service", "apache@80.service", "apache@.service"), "unable to find template Unit(apache@.service) in Registry or on filesystem (looked for file /w/apache@80.service, looked for file /w/apache@.service)", id="instance"),
        # a suffix that is no unit type: said instead of "not found"
        pytest.param(missing("hello.srvice"), "hello.srvice has no valid unit suffix (.automount, .busname, .device, .mount, .path, .scope, .service, .slice, .snapshot, .socket, .swap, .target, .timer)", id="bad-suffix"),
        # an instance may hold dots: its template is named, not its "suffix"
        pytest.param(missing("etcd@10.0.0.1", "etcd@10.0.0.1.service", "etcd@.service"), "unable to find template Unit(etcd@.service) in Registry or on filesystem (looked for file /w/etcd@10.0.0.1.service, looked for file /w/etcd@.service)", id="instance-with-dots"),
    ],
)  # fmt: skip
def test_a_unit_found_nowhere_is_refused_with_fleets_message(arg: Argument, message: str) -> None:
    assert plan("submit", arg).refusal == f"Error creating units: {message}"


@pytest.mark.parametrize(
    "arg",
    [
        pytest.param(unreadable("bad.service"), id="own-file"),
        pytest.param(unreadable("apache@1.service", template=True), id="template-file"),
    ],
)
def test_an_unreadable_file_of_a_new_unit_is_refused(arg: Argument) -> None:
    name = arg.text
    p = plan("submit", arg)
    assert p.refusal == (
        f"Error creating units: failed getting Unit({name}) from file /w/{name}: line 1: bad"
    )
    assert p.writes == ()


@pytest.mark.parametrize(
    ("command", "arg", "message"),
    [
        # a directory names no file
        pytest.param("submit", own("units/", HELLO), 'argument "units/" names no unit', id="dir"),
        pytest.param("submit", own("units/..", HELLO), 'argument "units/.." names no unit',
                     id="dotdot"),
        # fleet's name rules, with fleet's messages
        pytest.param("submit", own("@x.service", HELLO), 'unit name cannot start in "@"',
                     id="starts-with-at"),
        pytest.param("submit", own("foo@1.mount", HELLO),
                     'invalid unit type for template: "mount"', id="template-type"),
        # a template never runs: load/start say which instance to use
        pytest.param("load", own("apache@.service", APACHE),
                     'cannot activate template "apache@.service": load an instance of it, e.g. apache@1.service',
                     id="load-template"),
        pytest.param("start", own("apache@.service", APACHE),
                     'cannot activate template "apache@.service": start an instance of it, e.g. apache@1.service',
                     id="start-template"),
    ],
)  # fmt: skip
def test_arguments_that_name_no_usable_unit_are_refused(
    command: str, arg: Argument, message: str
) -> None:
    p = plan(command, arg)
    assert p.refusal == f"Error creating units: {message}"
    assert (p.writes, p.set, p.wait) == ((), (), None)


def test_a_refusal_keeps_the_warnings_before_it_and_sends_nothing() -> None:
    p = plan(
        "start",
        own("hello.service", OTHER),  # registered with other content: a warning
        own("new.service", HELLO),  # would be created...
        missing("nosuch.service"),  # ...but this one ends the command
        registered={"hello.service": Registered(HELLO, "launched")},
    )
    assert p.notes == warn(
        "WARNING: Unit hello.service in registry differs from local unit file hello.service. "
        "Add --replace to override."
    )
    assert p.refusal.startswith("Error creating units: unable to find Unit(nosuch.service)")
    assert (p.writes, p.written, p.set, p.triggered, p.wait) == ((), (), (), (), None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("[X-Fleet]\nGlobal=true\nMachineOf=a.service\n",
                     "Global cannot be used with Peers", id="global-with-peers"),
        pytest.param("[X-Fleet]\nMachineID=abc\nConflicts=b.service\n",
                     "MachineID cannot be used with Conflicts", id="machine-id-with-conflicts"),
    ],
)  # fmt: skip
def test_requirements_that_cannot_hold_are_refused(text: str, message: str) -> None:
    p = plan("submit", own("x.service", parse_unit(text)))
    assert p.refusal == f"Error creating units: failed creating unit x.service: {message}"


def test_unknown_x_fleet_keys_are_warned_of_and_the_unit_created() -> None:
    unit = parse_unit("[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nMachineMetdata=a=b\n")
    p = plan("submit", own("x.service", unit))
    assert p.notes == warn(
        'WARNING: Unit x.service: unrecognized requirement in [X-Fleet] section: "MachineMetdata"'
    )
    assert p.writes == (Write("x.service", unit, "inactive"),)


def test_an_argument_naming_a_unit_twice_counts_once() -> None:
    # `hello`, `hello.service` and `b/hello.service` are one unit: the first file is used
    p = plan(
        "load", own("hello", HELLO), own("hello.service", OTHER), own("b/hello.service", OTHER)
    )
    assert p.writes == (Write("hello.service", HELLO, "loaded"),)
    assert p.wait == Wait(("hello.service",), "loaded")


def test_created_units_are_announced_non_global_first() -> None:
    p = plan(
        "submit", own("g.service", GLOBAL), own("hello.service", HELLO), own("b.service", OTHER)
    )
    assert [w.name for w in p.writes] == ["g.service", "hello.service", "b.service"]
    assert p.written == out(
        "Unit hello.service inactive", "Unit b.service inactive", "Unit g.service inactive"
    )


# --- units already registered ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("replace", "notes"),
    [
        pytest.param(False, (), id="used-silently"),
        pytest.param(True, out("Found same Unit(hello.service) in Registry, nothing to do"),
                     id="replace-says-nothing-to-do"),
    ],
)  # fmt: skip
def test_a_registered_unit_with_the_same_content(replace: bool, notes: tuple[Line, ...]) -> None:
    p = plan("submit", own("hello.service", HELLO), replace=replace,
             registered={"hello.service": Registered(HELLO)})  # fmt: skip
    assert (p.notes, p.writes, p.written, p.refusal) == (notes, (), (), "")


@pytest.mark.parametrize(
    ("arg", "kind"),
    [
        pytest.param(own("apache@1.service", OTHER), "unit file", id="own-file"),
        pytest.param(beside("apache@1.service", OTHER), "template unit file", id="template-file"),
    ],
)
def test_other_content_without_replace_is_warned_of_and_kept(arg: Argument, kind: str) -> None:
    p = plan("start", arg, registered={"apache@1.service": Registered(APACHE, "launched")})
    assert p.notes == warn(
        f"WARNING: Unit apache@1.service in registry differs from local {kind} apache@1.service. "
        "Add --replace to override."
    )
    assert p.writes == ()
    # it is in its state already: waited for quietly (fleet said nothing of it)
    assert p.wait == Wait(("apache@1.service",), "launched", frozenset({"apache@1.service"}))


@pytest.mark.parametrize("command", ["submit", "load", "start"])
@pytest.mark.parametrize("desired", ["inactive", "loaded", "launched"])
def test_replace_follows_fleets_state_table(command: str, desired: str) -> None:
    # fleet's checkReplaceUnitState: submit replaces inactive units, load also loaded ones,
    # start any
    p = plan(command, own("hello.service", OTHER), replace=True,
             registered={"hello.service": Registered(HELLO, desired)})  # fmt: skip
    if desired in REPLACEABLE[command]:
        assert p.writes == (Write("hello.service", OTHER),)  # the desired state is kept
        assert p.notes == ()
    else:
        assert p.writes == ()
        assert p.notes == warn(
            f"Warning: can not replace Unit(hello.service) in state '{desired}', "
            "use the appropriate command"
        )


def test_the_state_table_is_fleets() -> None:
    assert REPLACEABLE == {
        "submit": {"inactive"},
        "load": {"inactive", "loaded"},
        "start": {"inactive", "loaded", "launched"},
    }


@pytest.mark.parametrize(
    ("arg", "replace", "refusal"),
    [
        # --replace needs a file to replace the unit with
        pytest.param(missing("hello.service"), True,
                     "Error creating units: unable to find a local file for Unit(hello.service) to replace it with",
                     id="replace-no-file"),
        pytest.param(unreadable("hello.service"), True,
                     "Error creating units: failed getting Unit(hello.service) from file /w/hello.service: line 1: bad",
                     id="replace-unreadable-file"),
        # without --replace the registered unit is used and the file never compared (fleet)
        pytest.param(missing("hello.service"), False, "", id="no-file"),
        pytest.param(unreadable("hello.service"), False, "", id="unreadable-file"),
    ],
)  # fmt: skip
def test_a_registered_unit_without_a_usable_local_file(
    arg: Argument, replace: bool, refusal: str
) -> None:
    p = plan("load", arg, replace=replace, registered={"hello.service": Registered(HELLO)})
    assert p.refusal == refusal
    assert p.writes == ()
    if not refusal:
        assert p.set == ("hello.service",)


# --- desired states and waiting -------------------------------------------------------------


@pytest.mark.parametrize(
    ("desired", "state_set", "wait"),
    [
        # not there yet: set, then waited for
        pytest.param("inactive", ("hello.service",), Wait(("hello.service",), "launched"),
                     id="inactive"),
        pytest.param("loaded", ("hello.service",), Wait(("hello.service",), "launched"),
                     id="loaded"),
        # there already: nothing set, waited for quietly (a failure there still counts)
        pytest.param("launched", (), Wait(("hello.service",), "launched",
                                          frozenset({"hello.service"})), id="launched"),
    ],
)  # fmt: skip
def test_start_of_a_registered_unit(desired: str, state_set: tuple, wait: Wait) -> None:
    p = plan("start", own("hello.service", HELLO),
             registered={"hello.service": Registered(HELLO, desired)})  # fmt: skip
    assert (p.writes, p.state, p.set, p.wait) == ((), "launched", state_set, wait)


@pytest.mark.parametrize(
    ("desired", "state_set"),
    [
        # its desired state stays: nothing to set, but its new content is waited for
        pytest.param("launched", (), id="launched"),
        # replaced in place (the state kept), then set as any other
        pytest.param("loaded", ("hello.service",), id="loaded"),
    ],
)
def test_a_replaced_unit_is_waited_for_even_in_its_state(desired: str, state_set: tuple) -> None:
    p = plan("start", own("hello.service", OTHER), replace=True,
             registered={"hello.service": Registered(HELLO, desired)})  # fmt: skip
    assert p.writes == (Write("hello.service", OTHER),)
    assert p.set == state_set
    assert p.wait == Wait(("hello.service",), "launched")  # not quiet: its content changed


def test_load_of_a_launched_unit_sets_it_back_to_loaded() -> None:
    p = plan("load", own("hello.service", HELLO),
             registered={"hello.service": Registered(HELLO, "launched")})  # fmt: skip
    assert p.set == ("hello.service",)
    assert p.wait == Wait(("hello.service",), "loaded")


@pytest.mark.parametrize(
    ("registered", "triggered"),
    [
        # created in its state: triggered, never waited for (it runs on many machines)
        pytest.param({}, out("Triggered global unit g.service start"), id="new"),
        pytest.param({"g.service": Registered(GLOBAL, "loaded")},
                     out("Triggered global unit g.service start"), id="set"),
        # there already: nothing said, nothing waited for
        pytest.param({"g.service": Registered(GLOBAL, "launched")}, (), id="already-there"),
    ],
)  # fmt: skip
def test_global_units_are_triggered_not_waited_for(
    registered: dict[str, Registered], triggered: tuple[Line, ...]
) -> None:
    p = plan("start", own("g.service", GLOBAL), registered=registered)
    assert p.triggered == triggered
    assert p.wait is None


@pytest.mark.parametrize(
    ("block", "triggered", "wait"),
    [
        # waited for: the units set, then those there already (quietly)
        pytest.param(True, out("Triggered global unit g.service start"),
                     Wait(("b.service", "hello.service"), "launched", frozenset({"hello.service"})),
                     id="block"),
        # --no-block: each unit set is said to be triggered; those there already are not
        pytest.param(False, out("Triggered global unit g.service start",
                                "Triggered unit b.service start"), None, id="no-block"),
    ],
)  # fmt: skip
def test_what_is_waited_for(block: bool, triggered: tuple[Line, ...], wait: Wait | None) -> None:
    p = plan(
        "start",
        own("hello.service", HELLO),
        own("g.service", GLOBAL),
        own("b.service", OTHER),
        registered={"hello.service": Registered(HELLO, "launched")},
        block=block,
    )
    assert p.set == ()  # g and b are created launched
    assert p.triggered == triggered
    assert p.wait == wait


@pytest.mark.parametrize(
    ("command", "args", "registered"),
    [
        pytest.param("start", [own("hello", HELLO), own("g.service", GLOBAL)], {}, id="new"),
        pytest.param("load", [own("hello", HELLO)],
                     {"hello.service": Registered(HELLO, "launched")}, id="load-launched"),
        pytest.param("start", [own("hello", OTHER)],
                     {"hello.service": Registered(HELLO, "loaded")}, id="start-other-content"),
        pytest.param("start", [beside("apache@1", APACHE), beside("apache@2", APACHE)], {},
                     id="instances"),
    ],
)  # fmt: skip
def test_planning_again_once_done_changes_nothing(
    command: str, args: list[Argument], registered: dict[str, Registered]
) -> None:
    first = plan_submit(command, args, registered, replace=True)
    done = dict(registered)
    for write in first.writes:
        done[write.name] = Registered(write.unit, write.desired or done[write.name].desired)
    for name in first.set:
        done[name] = Registered(done[name].unit, first.state)
    again = plan_submit(command, args, done, replace=True)
    assert (again.writes, again.set, again.refusal) == ((), (), "")
    # the same units are waited for, now quietly: they were there already
    waited = first.wait.units if first.wait else ()
    assert sorted(again.wait.units if again.wait else ()) == sorted(waited)
    assert again.wait is None or again.wait.quiet == frozenset(again.wait.units)


def test_the_same_input_gives_the_same_plan() -> None:
    args = (own("hello", HELLO), beside("apache@1", APACHE), own("g.service", GLOBAL))
    assert plan_submit("start", args, {}) == plan_submit("start", args, {})


@pytest.mark.parametrize(
    ("arg", "problem"),
    [
        pytest.param("hello.srvice", True, id="typo"),
        pytest.param("hello", False, id="no-suffix"),
        pytest.param("foo.target", False, id="a-unit-type"),
        pytest.param(".hidden", False, id="leading-dot"),
        pytest.param("dir.d/hello", False, id="dot-in-directory"),
    ],
)
def test_unit_suffix_problem(arg: str, problem: bool) -> None:
    assert (unit_suffix_problem(arg) is not None) is problem


WEB = parse_unit("[Service]\nExecStart=/bin/sleep 2\n")
WEB_ELSE = parse_unit("[Service]\nExecStart=/bin/sleep 3\n")
W1, W2, W3 = (Write(f"web@{i}.service", WEB) for i in (1, 2, 3))
LAUNCHED = ("web@1.service", "web@2.service", "web@3.service", "hello.service")


@pytest.mark.parametrize(
    ("writes", "launched", "expected"),
    [
        # every launched instance, one new version: rolled out
        ((W1, W2, W3), LAUNCHED, {"web@.service": (W1, W2, W3)}),
        # not every launched instance: replaced at once, as fleet
        ((W1, W2), LAUNCHED, {}),
        # one instance alone: replaced at once
        ((W1,), ("web@1.service",), {}),
        # two new versions among them: replaced at once
        ((W1, W2, Write("web@3.service", WEB_ELSE)), LAUNCHED, {}),
        # created, not replaced (a desired state): not a rollout
        (tuple(Write(w.name, WEB, "launched") for w in (W1, W2, W3)), LAUNCHED, {}),
        # a Global unit or a plain unit: rolled by the API's own rule, not here
        ((Write("hello.service", HELLO),), LAUNCHED, {}),
    ],
)
def test_replacing_every_launched_instance_of_a_template_rolls_it_out(
    writes: tuple[Write, ...], launched: tuple[str, ...], expected: dict
) -> None:
    assert template_rollouts(writes, launched) == expected
