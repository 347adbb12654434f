"""Which machine fleetctl's ssh, journal and the SSH fallback of status and journal go to, and
what runs there, decided without I/O.

fleet's findAddressInMachineList, findAddressInRunningUnits and globalMachineLookup (`fleetctl
ssh MACHINE|UNIT`), journal's `--machine` prefix, and the fallback fleet always took: when the
API cannot reach a unit's machine, `systemctl status` / `journalctl` run there over the system
ssh client. The CLI asks the API what these need (the machines, a unit), then connects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from fleetd.reconcile.lifecycle import Listed

__all__ = [
    "Fallback",
    "SshQuery",
    "SshTarget",
    "journal_command",
    "journal_machine_id",
    "journal_refusal",
    "machine_by_prefix",
    "plan_ssh",
    "plan_ssh_fallback",
    "ssh_query",
    "status_command",
]

# How fleet's lookups failed (after "Unable to proceed: ").
NO_MACHINE = "machine does not exist"
MANY_MACHINES = "found more than one machine"


def _with_prefix(machine_ids: Iterable[str], prefix: str) -> list[str]:
    return [m for m in machine_ids if m.startswith(prefix)]


def machine_by_prefix(machine_ids: Iterable[str], prefix: str) -> tuple[str | None, str]:
    """(the full ID of the one machine named by `prefix`, "") — a full ID, or a prefix of one
    machine's ID only — else (None, fleet's words why: NO_MACHINE, MANY_MACHINES)."""
    ids = list(machine_ids)
    if prefix in ids:
        return prefix, ""
    matches = _with_prefix(ids, prefix)
    if not matches:
        return None, NO_MACHINE
    if len(matches) > 1:
        return None, MANY_MACHINES
    return matches[0], ""


def journal_machine_id(machine_ids: Iterable[str], prefix: str) -> str:
    """`journal -m PREFIX`: the full ID of the one machine whose ID starts with it (as `ssh
    -m`); else the argument as given, for the server to judge (it names the machines that
    run the unit)."""
    matches = _with_prefix(machine_ids, prefix)
    return matches[0] if len(matches) == 1 else prefix


@dataclass(frozen=True)
class SshQuery:
    """What `fleetctl ssh` needs the API for before it can choose a machine, or why it
    needs nothing (a usage error: then nothing is asked)."""

    refusal: str = ""
    machine: str | None = None  # an ID prefix to look for among the machines
    unit: str | None = None  # a unit (as given) whose machine to look for
    command: tuple[str, ...] = ()  # what runs there (none: an interactive shell)


def ssh_query(args: Sequence[str], *, machine: str = "", unit: str = "") -> SshQuery:
    """`fleetctl ssh [-m PREFIX | -u UNIT] [MACHINE|UNIT] [--] [COMMAND...]`: without a flag
    the first argument names a machine (ID prefix) or a unit, whichever exists."""
    if machine and unit:
        return SshQuery("Both machine and unit flags provided, please specify only one.")
    rest = list(args)
    if machine or unit:  # a flag given empty is no flag
        query = SshQuery(machine=machine or None, unit=unit or None)
    elif rest:
        name = rest.pop(0)
        query = SshQuery(machine=name, unit=name)
    else:
        return SshQuery("Unable to proceed: one machine or unit must be provided")
    if rest and rest[0] == "--":
        rest = rest[1:]
    return replace(query, command=tuple(rest))


@dataclass(frozen=True)
class SshTarget:
    """The public IP `fleetctl ssh` connects to, or fleet's refusal."""

    address: str = ""
    refusal: str = ""


def plan_ssh(query: SshQuery, machines: Mapping[str, str], found: Listed | None) -> SshTarget:
    """Where `fleetctl ssh` goes, given the machines (ID → public IP) and the unit the query
    names (None: the registry has no such unit)."""
    if query.machine is not None and query.unit is not None:
        address, why = _machine_or_unit(machines, query.machine, found)
    elif query.machine is not None:
        address, why = _machine_address(machines, query.machine)
    else:
        address, why = _unit_address(machines, found)
    if why:
        return SshTarget(refusal=f"Unable to proceed: {why}")
    if not address:  # the machine published no IP
        return SshTarget(refusal="Could not determine address of machine.")
    return SshTarget(address)


def _machine_or_unit(
    machines: Mapping[str, str], name: str, unit: Listed | None
) -> tuple[str | None, str]:
    """fleet's globalMachineLookup: one argument, no flag, names a machine or a unit; a name
    that is both a machine ID prefix and a unit is refused as ambiguous."""
    m_addr, m_err = _machine_address(machines, name)
    u_addr, _ = _unit_address(machines, unit)
    if m_addr is not None and u_addr is not None:
        return None, (
            f"ambiguous argument, both machine and unit found for `{name}`.\n"
            "Please use flag `-m` or `-u` to refine the search"
        )
    if m_addr is not None:
        return m_addr, ""
    if u_addr is not None:
        return u_addr, ""
    return None, m_err if m_err == MANY_MACHINES else "could not find matching unit or machine"


def _machine_address(machines: Mapping[str, str], prefix: str) -> tuple[str | None, str]:
    """fleet's findAddressInMachineList: (the IP, "") of the machine whose ID starts with
    `prefix`, ("" when it published none), else (None, why)."""
    machine_id, why = machine_by_prefix(machines, prefix)
    if machine_id is None:
        return None, why
    return machines[machine_id], ""


def _unit_address(machines: Mapping[str, str], unit: Listed | None) -> tuple[str | None, str]:
    """fleet's findAddressInRunningUnits: (the IP of the unit's machine, ""), else (None, why).
    A Global unit runs on many machines: it names none."""
    if unit is None:
        return None, "unit does not exist"
    if unit.is_global:
        return None, "global units unsupported"
    if not unit.machine:
        return None, f"unit {unit.name} is not scheduled to a machine"
    if not machines.get(unit.machine):
        return None, "machine of unit not found"
    return machines[unit.machine], ""


@dataclass(frozen=True)
class Fallback:
    """Where status or journal run over SSH when the API cannot reach the unit's machines:
    the public IPs, in the API's order, up to the first machine whose IP is unknown; then
    `problem` says SSH cannot reach that one either (after the others ran)."""

    addresses: tuple[str, ...] = ()
    problem: str = ""


def plan_ssh_fallback(message: str, machines: Sequence[tuple[str, str]]) -> Fallback:
    """The fallback for the API's `message` that it could not reach `machines` ((ID, public
    IP) each, every machine of a Global unit's status). None at all is a problem too."""
    addresses: list[str] = []
    for _, ip in machines:
        if not ip:
            break
        addresses.append(ip)
    if machines and len(addresses) == len(machines):
        return Fallback(tuple(addresses))
    why = f"{message}; its public IP is unknown, so SSH cannot reach it either"
    return Fallback(tuple(addresses), why)


def status_command(name: str) -> list[str]:
    """fleet's remote command of `fleetctl status` over SSH."""
    return ["systemctl", "status", "-l", name]


def journal_command(
    name: str, lines: int, *, sudo: bool = False, follow: bool = False
) -> list[str]:
    """fleet's remote command of `fleetctl journal [--sudo] [-f]` over SSH (and of the journal
    lines shown when a waited unit failed on a machine the API cannot reach)."""
    command = ["journalctl", "--unit", name, "--no-pager", "-n", str(lines)]
    if sudo:
        command.insert(0, "sudo")
    if follow:
        command.append("-f")
    return command


_GLOBAL_JOURNAL = "Unable to retrieve journal of global unit {name}"


def journal_refusal(name: str, message: str, *, machine: str = "") -> str:
    """What `fleetctl journal` says when the API refused with `message`: fleet's words for a
    Global unit asked without --machine (the API's own message names the machines to choose
    from, which --machine is fleetd's addition for), else the API's message."""
    words = _GLOBAL_JOURNAL.format(name=name)
    if not machine and message.startswith(words):
        return words + "."
    return message
