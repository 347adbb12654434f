"""What fleetctl says of a rollout it follows, and when it stops following. Pure: it reads the
rollout as the API shows it (`rollout_json`: the document's JSON and its progress line), so
fleetctl needs no model to print it.

fleetctl follows a rollout until it is over for the command: finished (done, reverted,
cancelled), or waiting for the user (paused, canaries waiting for promote, stopped after a
failure). A rollout that ended elsewhere than the command wanted is a failure (exit 1) naming
the instance that failed and why, in systemd's words; fleetctl then prints that instance's
journal lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Report", "report", "status_lines"]

_WAITING = frozenset({"paused", "canary", "failed"})  # for the user: following ends
_FINISHED = frozenset({"done", "reverted", "cancelled"})


@dataclass(frozen=True, slots=True)
class Report:
    line: str  # the progress line (printed when it changes)
    over: bool  # stop following
    failure: str = ""  # the command failed: exit 1 with this line
    failed_unit: str = ""  # the instance whose journal explains the failure
    failed_machine: str = ""
    hint: str = ""  # what the user may do next (printed once, when over)


def report(doc: Mapping[str, Any], *, goal: str = "done") -> Report:
    """The rollout `doc` as fleetctl reports it, for a command that wants it to end in `goal`
    (`done` for an update or a restart, `reverted` for an undo)."""
    name, state = doc.get("name", ""), doc.get("state", "")
    progress = doc.get("progress", "")
    reason = doc.get("reason") or ""
    line = f"{name}: {progress}"
    if state not in ("running",):
        said = f": {reason}" if reason and state != "done" and reason != state else ""
        line += f" ({state}{said})"
    elif reason:
        line += f" ({reason})"
    over = state in _FINISHED or state in _WAITING
    if not over:
        return Report(line, False)
    hint = _hint(name, state)
    failed = _failed_target(doc)
    if state == goal or (state in ("canary", "paused") and goal == "done"):
        return Report(line, True, hint=hint)
    if state == "reverted" and reason == "undone":
        return Report(line, True, failure=f"the rollout of {name} was undone", hint=hint)
    words = {
        "reverted": f"every updated instance is back on {str(doc.get('from', ''))[:7]}",
        "failed": "stopped where it was (UpdateAutoRevert=false)",
        "cancelled": "cancelled",
        "done": "it is done",
    }.get(state, state)
    failure = f"Error rolling out {name}: {reason or state}; {words}"
    unit, machine = failed if failed else ("", "")
    return Report(line, True, failure, unit, machine, hint)


def _failed_target(doc: Mapping[str, Any]) -> tuple[str, str] | None:
    for target in doc.get("targets") or ():
        if target.get("phase") == "failed" or (
            target.get("reason") and target.get("phase") in ("reverting", "reverted")
        ):
            return target.get("unit", ""), target.get("machine", "")
    return None


def _hint(name: str, state: str) -> str:
    match state:
        case "canary":
            return f"canaries healthy: fleetctl rollout promote {name} (or rollout undo {name})"
        case "paused":
            return f"paused: fleetctl rollout resume {name}"
        case "failed":
            return (
                f"stopped: fleetctl rollout resume {name} tries the failed instances again, "
                f"fleetctl rollout undo {name} goes back"
            )
    return ""


def status_lines(doc: Mapping[str, Any]) -> list[str]:
    """`fleetctl rollout status --no-block`: the rollout, then one line per instance."""
    lines = [
        f"Rollout of {doc.get('name')}: {doc.get('action')} "
        f"{str(doc.get('from', ''))[:7]} -> {str(doc.get('to', ''))[:7]}, {doc.get('state')}",
        f"Progress: {doc.get('progress')}",
    ]
    if doc.get("reason"):
        lines.append(f"Reason: {doc['reason']}")
    policy = doc.get("policy") or {}
    words = [
        f"UpdateMaxParallel={policy.get('max_parallel', '1')}",
        f"UpdateMinHealthyTime={float(policy.get('min_healthy', 0)):g}s",
        f"UpdateHealthyDeadline={float(policy.get('deadline', 0)):g}s",
    ]
    if policy.get("canary"):
        words.append(f"UpdateCanary={policy['canary']}")
    if policy.get("min_available"):
        words.append(f"DisruptionBudget=MinAvailable={policy['min_available']}")
    if not policy.get("auto_revert", True):
        words.append("UpdateAutoRevert=false")
    lines.append("Policy: " + " ".join(words))
    lines.append("UNIT\tMACHINE\tPHASE\tREASON")
    for t in doc.get("targets") or ():
        lines.append(
            f"{t.get('unit')}\t{str(t.get('machine', ''))[:8]}\t{t.get('phase')}\t"
            f"{t.get('reason') or '-'}"
        )
    return lines
