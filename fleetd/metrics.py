"""Process-wide counters and summaries, rendered in Prometheus' text format by the API.

The shells count what they do (plans, placements and their latency, agent tasks, state
publishes); `/metrics` renders them next to the API's own request counters. Pure and tiny: no
client library, no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["METRICS", "Metrics", "gauge"]

_HELP = {
    "fleetd_engine_plans_total": ("counter", "Plans the engine computed while leader."),
    "fleetd_engine_writes_total": (
        "counter",
        "Placement writes by the engine, by action and outcome.",
    ),
    "fleetd_placement_latency_seconds": (
        "summary",
        "From the leader seeing a job that needs a machine to its placement written.",
    ),
    "fleetd_agent_tasks_total": ("counter", "systemd tasks the agent applied, by kind."),
    "fleetd_agent_states_published_total": ("counter", "Unit states the agent published."),
}


@dataclass
class Metrics:
    counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(
        default_factory=lambda: defaultdict(float)
    )
    summaries: dict[str, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0.0, 0]))

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self.counters[name, tuple(sorted(labels.items()))] += amount

    def observe(self, name: str, value: float) -> None:
        summary = self.summaries[name]
        summary[0] += value
        summary[1] += 1

    def render(self) -> list[str]:
        lines: list[str] = []
        names = sorted({name for name, _ in self.counters} | set(self.summaries))
        for name in names:
            kind, text = _HELP.get(name, ("untyped", name))
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            if name in self.summaries:
                total, count = self.summaries[name]
                lines += [f"{name}_sum {total:.6f}", f"{name}_count {int(count)}"]
                continue
            for (n, labels), value in sorted(self.counters.items()):
                if n == name:
                    label_text = ",".join(f'{k}="{v}"' for k, v in labels)
                    lines.append(
                        f"{name}{{{label_text}}} {value:g}" if labels else f"{name} {value:g}"
                    )
        return lines


def gauge(name: str, text: str, samples: Iterable[tuple[Mapping[str, str], float]]) -> list[str]:
    """A gauge's lines: its help, its type, one line per (labels, value) sample; none at all
    without samples."""
    lines = [f"{name}{_labels(labels)} {_number(value)}" for labels, value in samples]
    return [f"# HELP {name} {text}", f"# TYPE {name} gauge", *lines] if lines else []


def _number(value: float) -> str:
    """Exact: bytes as integers (`8589934592`, not `8.58993e+09`), CPUs as the shortest float."""
    return str(int(value)) if isinstance(value, int) else repr(float(value))


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


METRICS = Metrics()
