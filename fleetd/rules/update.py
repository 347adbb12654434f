"""How a unit is updated and how much of it may be down: `Update*=` and `DisruptionBudget=`.

Not placement rules — their terms refuse no machine (`places = False`: the scheduler never asks
them) — but [X-Fleet] options read, validated at submit and stored like the others, so a
refused value is reported before anything is written:

- `UpdateMaxParallel=N|N%` (default 1): instances updated at once; a percentage of the
  instances being updated, rounded up, at least 1.
- `UpdateMinHealthyTime=SPAN` (default 10s): how long an updated instance must stay healthy
  before it counts as updated (and the next batch starts).
- `UpdateHealthyDeadline=SPAN` (default 5m): an instance not healthy by then fails the rollout.
- `UpdateHealthCheck=COMMAND`: a shell command run on the machine (`/bin/sh -c`), with the
  unit's `Environment=` values; exit 0 = healthy. Without it: systemd reports the unit active
  and its `NRestarts` did not grow during the healthy time.
- `UpdateCanary=N` (default 0): update N instances, then wait for `fleetctl rollout promote`.
- `UpdateAutoRevert=true|false` (default true): a failed rollout returns every updated
  instance to the previous version.
- `DisruptionBudget=MinAvailable=N|N%`: across the unit's group (a template's instances), at
  least N (a percentage of the instances, rounded up) stay healthy during a rollout or a drain.

Spans are systemd's (`10s`, `5min`, `1min 30s`, `500ms`; a bare number is seconds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from fleetd.rules.base import Options, Rule, Term, UnitValidationError
from fleetd.rules.sizes import timespan
from fleetd.unit_names import UnitName

__all__ = [
    "BUDGET_RULE",
    "DEFAULT_POLICY",
    "RULE",
    "DisruptionBudget",
    "UpdatePolicy",
    "share",
]

_OPTIONS = (
    "UpdateMaxParallel",
    "UpdateMinHealthyTime",
    "UpdateHealthyDeadline",
    "UpdateHealthCheck",
    "UpdateCanary",
    "UpdateAutoRevert",
)
_TRUE = frozenset({"1", "yes", "true", "on"})
_FALSE = frozenset({"0", "no", "false", "off"})


def share(amount: str, total: int) -> int:
    """`N` → N; `N%` → N percent of `total`, rounded up."""
    if amount.endswith("%"):
        return math.ceil(float(amount[:-1]) * total / 100)
    return int(amount)


def _amount(option: str, value: str, *, least: int) -> str:
    text = value.strip()
    number = text[:-1] if text.endswith("%") else text
    if not number.isdigit() or int(number) < least or (text.endswith("%") and int(number) > 100):
        kind = "a whole number" if least == 0 else f"a whole number of at least {least}"
        raise UnitValidationError(f"{option}={value}: expected {kind} or a percentage (N%)")
    return text


@dataclass(frozen=True, slots=True)
class UpdatePolicy(Term):
    """How a new version (or a health-gated restart) rolls over a unit's instances."""

    rule: ClassVar[str] = "Update"
    places: ClassVar[bool] = False
    max_parallel: str = "1"
    min_healthy: float = 10.0
    deadline: float = 300.0
    health_check: str = ""
    canary: int = 0
    auto_revert: bool = True

    def parallel(self, total: int) -> int:
        """Instances updated at once out of `total`: at least 1."""
        return max(1, share(self.max_parallel, total))

    def to_dict(self) -> dict[str, object]:
        return {
            "max_parallel": self.max_parallel,
            "min_healthy": self.min_healthy,
            "deadline": self.deadline,
            "health_check": self.health_check,
            "canary": self.canary,
            "auto_revert": self.auto_revert,
        }

    def __str__(self) -> str:
        return (
            f"UpdateMaxParallel={self.max_parallel} UpdateMinHealthyTime={self.min_healthy:g}s "
            f"UpdateHealthyDeadline={self.deadline:g}s"
        )


DEFAULT_POLICY = UpdatePolicy()


def _parse(options: Options, name: UnitName | None) -> UpdatePolicy | None:
    given = {o: options[o][-1] for o in _OPTIONS if options.get(o)}  # the last one wins
    if not given:
        return None
    values: dict[str, object] = {}
    if "UpdateMaxParallel" in given:
        values["max_parallel"] = _amount("UpdateMaxParallel", given["UpdateMaxParallel"], least=1)
    for option, key in (("UpdateMinHealthyTime", "min_healthy"),
                        ("UpdateHealthyDeadline", "deadline")):  # fmt: skip
        if option in given:
            span = timespan(given[option])
            if span is None:
                raise UnitValidationError(
                    f"{option}={given[option]}: expected a time span (10s, 5min, 1min 30s)"
                )
            values[key] = span
    if "UpdateHealthCheck" in given:
        values["health_check"] = given["UpdateHealthCheck"].strip()
    if "UpdateCanary" in given:
        canary = given["UpdateCanary"].strip()
        if not canary.isdigit():
            raise UnitValidationError(
                f"UpdateCanary={given['UpdateCanary']}: expected a whole number"
            )
        values["canary"] = int(canary)
    if "UpdateAutoRevert" in given:
        flag = given["UpdateAutoRevert"].strip().lower()
        if flag not in _TRUE | _FALSE:
            raise UnitValidationError(
                f"UpdateAutoRevert={given['UpdateAutoRevert']}: expected true or false"
            )
        values["auto_revert"] = flag in _TRUE
    policy = UpdatePolicy(**values)  # type: ignore[arg-type]
    if policy.deadline <= policy.min_healthy:
        raise UnitValidationError(
            f"UpdateHealthyDeadline={policy.deadline:g}s must be longer than "
            f"UpdateMinHealthyTime={policy.min_healthy:g}s"
        )
    return policy


RULE = Rule("Update", _OPTIONS, _parse)


@dataclass(frozen=True, slots=True)
class DisruptionBudget(Term):
    """At least `min_available` of the unit's group stay healthy (N, or N% of the group)."""

    rule: ClassVar[str] = "DisruptionBudget"
    places: ClassVar[bool] = False
    min_available: str

    def required(self, total: int) -> int:
        """Instances that must stay healthy out of `total`."""
        return min(total, share(self.min_available, total))

    def __str__(self) -> str:
        return f"DisruptionBudget=MinAvailable={self.min_available}"


def _parse_budget(options: Options, name: UnitName | None) -> DisruptionBudget | None:
    values = options.get("DisruptionBudget", ())
    if not values:
        return None
    value = values[-1]
    key, _, amount = value.partition("=")
    if key.strip() != "MinAvailable" or not amount:
        raise UnitValidationError(
            f"DisruptionBudget={value}: expected MinAvailable=N or MinAvailable=N%"
        )
    return DisruptionBudget(_amount("DisruptionBudget", amount, least=0))


BUDGET_RULE = Rule("DisruptionBudget", ("DisruptionBudget",), _parse_budget)
