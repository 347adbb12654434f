"""Where fleetctl ssh, journal --machine and the SSH fallback of status and journal go, and
what runs there: plain values (the machines and units the API listed). The real ssh client
against a real sshd: tests/cli/test_ssh.py."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetd.reconcile.lifecycle import Listed
from fleetd.reconcile.remote import (
    Fallback,
    SshQuery,
    SshTarget,
    journal_command,
    journal_machine_id,
    journal_refusal,
    plan_ssh,
    plan_ssh_fallback,
    ssh_query,
    status_command,
)

A1, A2, B1 = "a1" + "0" * 30, "a2" + "0" * 30, "b1" + "0" * 30
MACHINES = {A1: "10.0.0.1", A2: "10.0.0.2", B1: ""}  # B1 published no public IP
HELLO = Listed("hello.service", "launched", "launched", machine=A2)


def unproceeded(why: str) -> SshTarget:
    return SshTarget(refusal=f"Unable to proceed: {why}")


@pytest.mark.parametrize(
    ("prefix", "machine"),
    [
        pytest.param("a2", A2, id="unique-prefix"),
        pytest.param(A1, A1, id="whole-id"),
        # none or several: passed on as given, the server names the machines to choose from
        pytest.param("a", "a", id="ambiguous"),
        pytest.param("c", "c", id="none"),
    ],
)
def test_journal_machine_by_id_prefix(prefix: str, machine: str) -> None:
    assert journal_machine_id(MACHINES, prefix) == machine


@pytest.mark.parametrize(
    ("args", "flags", "refusal"),
    [
        pytest.param([], {"machine": "a1", "unit": "hello"},
                     "Both machine and unit flags provided, please specify only one.", id="both"),
        pytest.param([], {}, "Unable to proceed: one machine or unit must be provided", id="none"),
        # a flag given empty counts as not given
        pytest.param([], {"machine": "", "unit": ""},
                     "Unable to proceed: one machine or unit must be provided", id="empty-flags"),
    ],
)  # fmt: skip
def test_ssh_usage_errors_ask_nothing(args: list[str], flags: dict, refusal: str) -> None:
    assert ssh_query(args, **flags) == SshQuery(refusal)


@pytest.mark.parametrize(
    ("args", "flags", "query"),
    [
        pytest.param(["uptime"], {"machine": "a1"}, SshQuery(machine="a1", command=("uptime",)),
                     id="machine-flag"),
        pytest.param([], {"unit": "hello"}, SshQuery(unit="hello"), id="unit-flag-shell"),
        # no flag: the first argument is a machine or a unit, the rest the command
        pytest.param(["hello", "ls", "-l"], {},
                     SshQuery(machine="hello", unit="hello", command=("ls", "-l")), id="either"),
        # `--` ends fleetctl's options and is not sent
        pytest.param(["hello", "--", "ls", "--", "x"], {},
                     SshQuery(machine="hello", unit="hello", command=("ls", "--", "x")),
                     id="double-dash"),
        pytest.param(["--", "ls"], {"unit": "hello"}, SshQuery(unit="hello", command=("ls",)),
                     id="double-dash-after-flag"),
    ],
)  # fmt: skip
def test_what_ssh_looks_up_and_runs(args: list[str], flags: dict, query: SshQuery) -> None:
    assert ssh_query(args, **flags) == query


@pytest.mark.parametrize(
    ("prefix", "target"),
    [
        pytest.param("a1", SshTarget("10.0.0.1"), id="unique"),
        pytest.param("a", unproceeded("found more than one machine"), id="several"),
        pytest.param("c", unproceeded("machine does not exist"), id="none"),
        pytest.param("b1", SshTarget(refusal="Could not determine address of machine."),
                     id="no-ip"),
    ],
)  # fmt: skip
def test_ssh_to_a_machine_by_id_prefix(prefix: str, target: SshTarget) -> None:
    assert plan_ssh(SshQuery(machine=prefix), MACHINES, None) == target


@pytest.mark.parametrize(
    ("found", "target"),
    [
        pytest.param(HELLO, SshTarget("10.0.0.2"), id="its-machine"),
        pytest.param(None, unproceeded("unit does not exist"), id="missing"),
        # a Global unit runs on many machines: which one is not for ssh to guess
        pytest.param(Listed("g.service", "launched", is_global=True),
                     unproceeded("global units unsupported"), id="global"),
        pytest.param(Listed("hello.service", "inactive"),
                     unproceeded("unit hello.service is not scheduled to a machine"),
                     id="unscheduled"),
        # its machine left, or published no IP
        pytest.param(Listed("hello.service", machine="c" * 32),
                     unproceeded("machine of unit not found"), id="machine-gone"),
        pytest.param(Listed("hello.service", machine=B1),
                     unproceeded("machine of unit not found"), id="machine-without-ip"),
    ],
)  # fmt: skip
def test_ssh_to_a_units_machine(found: Listed | None, target: SshTarget) -> None:
    assert plan_ssh(SshQuery(unit="hello"), MACHINES, found) == target


@pytest.mark.parametrize(
    ("name", "found", "target"),
    [
        pytest.param("a1", None, SshTarget("10.0.0.1"), id="a-machine"),
        pytest.param("hello", HELLO, SshTarget("10.0.0.2"), id="a-unit"),
        # a unit wins over several machines sharing the prefix
        pytest.param("a", HELLO, SshTarget("10.0.0.2"), id="unit-over-several-machines"),
        pytest.param("a", None, unproceeded("found more than one machine"), id="several-machines"),
        pytest.param("a1", HELLO, unproceeded(
            "ambiguous argument, both machine and unit found for `a1`.\n"
            "Please use flag `-m` or `-u` to refine the search"), id="both"),
        pytest.param("zz", None, unproceeded("could not find matching unit or machine"),
                     id="neither"),
        # a machine without an IP is still the one named: fleet's "could not determine"
        pytest.param("b1", None, SshTarget(refusal="Could not determine address of machine."),
                     id="machine-without-ip"),
    ],
)  # fmt: skip
def test_one_argument_names_a_machine_or_a_unit(
    name: str, found: Listed | None, target: SshTarget
) -> None:
    assert plan_ssh(SshQuery(machine=name, unit=name), MACHINES, found) == target


UNKNOWN = "cannot reach machine x; its public IP is unknown, so SSH cannot reach it either"


@pytest.mark.parametrize(
    ("machines", "fallback"),
    [
        pytest.param([(A1, "10.0.0.1")], Fallback(("10.0.0.1",)), id="one"),
        # a Global unit's status: each of its machines, in the API's order
        pytest.param([(A2, "10.0.0.2"), (A1, "10.0.0.1")], Fallback(("10.0.0.2", "10.0.0.1")),
                     id="several"),
        # the machines before one without an IP still run, then that one is a failure
        pytest.param([(A1, "10.0.0.1"), (B1, ""), (A2, "10.0.0.2")],
                     Fallback(("10.0.0.1",), UNKNOWN), id="unknown-ip-later"),
        pytest.param([(B1, "")], Fallback((), UNKNOWN), id="unknown-ip"),
        pytest.param([], Fallback((), UNKNOWN), id="no-machine"),
    ],
)  # fmt: skip
def test_the_ssh_fallback_goes_where_the_api_could_not(
    machines: list[tuple[str, str]], fallback: Fallback
) -> None:
    assert plan_ssh_fallback("cannot reach machine x", machines) == fallback


@pytest.mark.parametrize(
    ("flags", "command"),
    [
        pytest.param({}, ["journalctl", "--unit", "a.service", "--no-pager", "-n", "5"],
                     id="plain"),
        pytest.param({"sudo": True, "follow": True},
                     ["sudo", "journalctl", "--unit", "a.service", "--no-pager", "-n", "5", "-f"],
                     id="sudo-follow"),
    ],
)  # fmt: skip
def test_the_remote_commands_are_fleets(flags: dict, command: list[str]) -> None:
    assert journal_command("a.service", 5, **flags) == command
    assert status_command("a.service") == ["systemctl", "status", "-l", "a.service"]


GLOBAL_REFUSED = (
    "Unable to retrieve journal of global unit g.service: name a machine with ?machineID= "
    f"(one of {A1}, {A2})."
)


@pytest.mark.parametrize(
    ("message", "machine", "said"),
    [
        # fleet's words for a Global unit's journal: it had no --machine to offer
        pytest.param(GLOBAL_REFUSED, "", "Unable to retrieve journal of global unit g.service.",
                     id="global"),
        # asked of a machine, whatever the API says is said as it is
        pytest.param(GLOBAL_REFUSED, "a1", GLOBAL_REFUSED, id="global-with-machine"),
        pytest.param("Unit g.service does not exist.", "",
                     "Unit g.service does not exist.", id="other"),
    ],
)  # fmt: skip
def test_what_journal_says_when_refused(message: str, machine: str, said: str) -> None:
    assert journal_refusal("g.service", message, machine=machine) == said


IDS = st.sampled_from([A1, A2, B1, "c" * 32])


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(IDS, st.sampled_from(["", "10.0.0.1", "10.0.0.2"]), max_size=4),
    st.sampled_from(["", "a", "a1", "b", "c", "hello"]),
    st.sampled_from(["machine", "unit", "either"]),
    st.none() | st.builds(Listed, st.just("hello.service"), machine=IDS | st.just(""),
                          is_global=st.booleans()),
)  # fmt: skip
def test_ssh_goes_to_the_one_machine_named_or_refuses(
    machines: dict[str, str], name: str, by: str, found: Listed | None
) -> None:
    query = SshQuery(machine=None if by == "unit" else name, unit=None if by == "machine" else name)
    target = plan_ssh(query, machines, found)
    assert bool(target.address) != bool(target.refusal)  # one or the other, never both
    if target.address:
        # the IP of the only machine with that prefix, or that of the unit's machine
        prefixed = [ip for m, ip in machines.items() if m.startswith(name)]
        candidates = prefixed if by != "unit" and len(prefixed) == 1 else []
        if by != "machine" and found is not None and not found.is_global:
            candidates.append(machines.get(found.machine))
        assert target.address in candidates
