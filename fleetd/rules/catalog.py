"""Every placement rule, in the order they are validated and checked.

The order is fleet's for validation messages (MachineOf's unresolvable peers first, then
MachineID's, Global's and Conflicts' combinations), then cheapest check first. Adding a rule:
its module here, and one line below.
"""

from __future__ import annotations

from fleetd.rules import (
    conflicts,
    global_,
    machine_id,
    machine_of,
    max_per_machine,
    metadata,
    replaces,
    resources,
    spread,
    update,
)
from fleetd.rules.base import Rule

__all__ = ["RULES"]

RULES: tuple[Rule, ...] = (
    machine_of.RULE,
    machine_id.RULE,
    global_.RULE,
    metadata.RULE,
    conflicts.RULE,
    replaces.RULE,
    max_per_machine.RULE,
    resources.RULE,
    spread.RULE,
    update.RULE,
    update.BUDGET_RULE,
)
