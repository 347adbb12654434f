"""The metadata of a machine everyone sees: its configured metadata overridden by the dynamic
metadata set through the API (fleet's `mergeMetadata`). The one place that merges them: the
engine's scheduler input, an agent's Global-unit matching and `GET /machines` all read it here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Protocol

from fleetd.model import Machine

__all__ = ["effective_machines", "effective_metadata", "merge_metadata"]


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
    (configured or not). Without dynamic metadata, `configured` itself."""
    if not dynamic:
        return configured
    merged = dict(configured)
    for key, value in dynamic.items():
        if value:
            merged[key] = value
        else:
            merged.pop(key, None)
    return merged


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
