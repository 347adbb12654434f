"""The metadata of a machine everyone sees: its configured metadata overridden by the dynamic
metadata set through the API (fleet's `mergeMetadata`). The one place that merges them: the
engine's scheduler input, an agent's Global-unit matching and `GET /machines` all read it here.

Keys beginning with `fleet.` are the machine's facts, measured by its fleetd and registered with
its configured metadata (`with_facts`): nothing else sets or removes them, so a `fleet.` key of
the configuration or of the dynamic metadata (the API refuses them; one written into etcd by
hand) is ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Protocol

from fleetd.model import Machine
from fleetd.rules.metadata import RESERVED_PREFIX

__all__ = ["effective_machines", "effective_metadata", "merge_metadata", "with_facts"]


class MachinesView(Protocol):
    """A Snapshot or a ClusterView: registered machines and dynamic metadata by machine ID."""

    @property
    def machines(self) -> Mapping[str, Machine]: ...

    @property
    def dynamic_metadata(self) -> Mapping[str, Mapping[str, str]]: ...


def merge_metadata(
    configured: Mapping[str, str], dynamic: Mapping[str, str] | None
) -> Mapping[str, str]:
    """`configured` overridden by `dynamic`: a dynamic value wins, a dynamic "" deletes the key
    (configured or not), except a fact's (`fleet.*`: the dynamic value is ignored). Without
    dynamic metadata, `configured` itself."""
    if not dynamic:
        return configured
    merged = dict(configured)
    for key, value in dynamic.items():
        if key.startswith(RESERVED_PREFIX):
            continue
        if value:
            merged[key] = value
        else:
            merged.pop(key, None)
    return merged


def with_facts(configured: Mapping[str, str], facts: Mapping[str, str]) -> dict[str, str]:
    """The metadata a machine registers: its configured metadata and its measured facts. Only
    the facts carry `fleet.` keys (a configured one, which the configuration refuses, is
    dropped)."""
    own = {k: v for k, v in configured.items() if not k.startswith(RESERVED_PREFIX)}
    return {**own, **{k: v for k, v in facts.items() if k.startswith(RESERVED_PREFIX)}}


def effective_metadata(
    view: MachinesView, machine_id: str, configured: Mapping[str, str] | None = None
) -> Mapping[str, str]:
    """The metadata of `machine_id`: its registered (or else `configured`) metadata overridden
    by its dynamic metadata."""
    machine = view.machines.get(machine_id)
    base = machine.metadata if machine is not None else (configured or {})
    return merge_metadata(base, view.dynamic_metadata.get(machine_id))


def effective_machines(view: MachinesView) -> dict[str, Machine]:
    """Every registered machine, with its effective metadata."""
    dynamic = view.dynamic_metadata
    return {
        mid: m
        if mid not in dynamic
        else dataclasses.replace(m, metadata=merge_metadata(m.metadata, dynamic[mid]))
        for mid, m in view.machines.items()
    }
