"""Placement rules: one module per [X-Fleet] option, each holding its option names, parsing,
validation, feasibility check, candidate narrowing and the words of its refusals.

Pure, beside the unit model (`fleetd.unit` reads a file's requirements through
`Requirements.of`; the scheduler and every agent ask the same terms). See docs/architecture.md,
"How to add a placement rule".
"""

from fleetd.rules.base import (
    Capacity,
    Objection,
    Options,
    Placing,
    Rejection,
    RejectReason,
    Rule,
    Standing,
    Term,
    UnitValidationError,
    refusal,
    refusals,
)
from fleetd.rules.catalog import RULES
from fleetd.rules.globs import glob_match
from fleetd.rules.machine_id import SHORT_ID_LENGTH, short_id
from fleetd.rules.requirements import READS, XFLEET, Invalid, Requirements

__all__ = [
    "READS",
    "RULES",
    "SHORT_ID_LENGTH",
    "XFLEET",
    "Capacity",
    "Invalid",
    "Objection",
    "Options",
    "Placing",
    "RejectReason",
    "Rejection",
    "Requirements",
    "Rule",
    "Standing",
    "Term",
    "UnitValidationError",
    "glob_match",
    "refusal",
    "refusals",
    "short_id",
]
