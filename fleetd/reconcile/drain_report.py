"""What `fleetctl cordon`, `uncordon` and `drain` print, decided without I/O: which machine an
argument names (a full ID or a unique prefix, as set-metadata takes it), the line of each
answer, and, for a followed drain, each document's line, when following ends and whether the
command failed. Reads the API's JSON (`x/machines/{id}/cordon`), so fleetctl needs nothing of
the registry."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fleetd.model import short_id
from fleetd.reconcile.remote import NO_MACHINE, machine_by_prefix

__all__ = ["DrainReport", "cordon_line", "report", "resolve_machine", "uncordon_line"]

UNABLE = "Unable to proceed: "


def resolve_machine(machine_ids: Iterable[str], prefix: str) -> tuple[str | None, str]:
    """(the full ID, "") of the one machine `prefix` names, else (None, why, as fleetctl
    says it)."""
    ids = sorted(set(machine_ids))
    if not prefix:
        return None, UNABLE + "a machine ID (or a unique prefix of one) is needed"
    machine_id, why = machine_by_prefix(ids, prefix)
    if machine_id is not None:
        return machine_id, ""
    if why == NO_MACHINE:
        return None, f"{UNABLE}{why} (no machine ID starts with {prefix!r})"
    matches = [m for m in ids if m.startswith(prefix)]
    return None, f"{UNABLE}{why} (the IDs of {', '.join(matches)} start with {prefix!r})"


def cordon_line(answer: Mapping[str, Any]) -> str:
    """The line of `PUT x/machines/{id}/cordon`'s answer."""
    doc = answer.get("cordon") or {}
    short = short_id(doc.get("machine") or "")
    if answer.get("changed"):
        return f"Cordoned machine {short}: it takes no new units, those there stay"
    state = doc.get("state") or "cordoned"
    more = "" if state == "cordoned" else f" ({state})"
    return f"Machine {short} is already cordoned{more}"


def uncordon_line(answer: Mapping[str, Any], machine_id: str) -> str:
    """The line of `DELETE x/machines/{id}/cordon`'s answer."""
    short = short_id(machine_id)
    if not answer.get("uncordoned"):
        return f"Machine {short} is not cordoned"
    was = answer.get("was") or {}
    if was.get("state") == "draining":
        return f"Uncordoned machine {short}: its drain ended ({was.get('progress', '')})"
    return f"Uncordoned machine {short}: it takes new units again"


@dataclass(frozen=True, slots=True)
class DrainReport:
    """One document of a drain as the command reports it: the line to print, whether
    following ends here, and the error it ends with ("" when none)."""

    line: str
    over: bool
    failure: str = ""


def report(doc: Mapping[str, Any]) -> DrainReport:
    """The line of a drain's document (as `x/machines/{id}/cordon` shows it)."""
    short = short_id(doc.get("machine") or "")
    state, reason = doc.get("state"), doc.get("reason") or ""
    progress = f"drain of {short}: {doc.get('progress', '')}"
    targets = doc.get("targets") or ()
    failed = [t for t in targets if t.get("phase") == "failed"]
    if state == "drained":
        moved = sum(t.get("phase") == "healthy" for t in targets)
        end = f"Machine {short} drained: {moved} {'unit' if moved == 1 else 'units'} moved"
        if doc.get("stop_globals"):
            end += ", its Global units stop"
        return DrainReport(f"{progress}\n{end}", True)
    if state != "draining":
        return DrainReport(f"Machine {short} is {state}, not draining", True)
    if failed:
        return DrainReport(progress, True, f"Error: drain of {short} {reason}")
    return DrainReport(f"{progress} ({reason})" if reason else progress, False)
