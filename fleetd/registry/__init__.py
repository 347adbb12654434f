"""fleetd's cluster state in etcd: key layout, typed events, transactions, leases, watches.

Only `fleetd.registry.etcd` knows the etcd client library; everything else here is ours.
"""

from fleetd.registry.config import EtcdConfig
from fleetd.registry.errors import (
    EtcdAuthError,
    EtcdRequestFailed,
    EtcdTLSError,
    EtcdUnavailable,
    JobNotFound,
    MachineIdInUse,
    RegistryConflict,
    RegistryError,
    RolloutInProgress,
    UnitExists,
    WatchCompacted,
)
from fleetd.registry.fold import Changed, ClusterView, Event, Removed, Resync, Snapshot
from fleetd.registry.follow import Update
from fleetd.registry.keys import DEFAULT_PREFIX, KeyKind, KeyLayout
from fleetd.registry.leases import Lease
from fleetd.registry.metadata import (
    effective_machines,
    effective_metadata,
    merge_metadata,
    with_facts,
)
from fleetd.registry.registry import Leadership, Registry, Submitted
from fleetd.registry.watch import EventStream

__all__ = [
    "DEFAULT_PREFIX",
    "Changed",
    "ClusterView",
    "EtcdAuthError",
    "EtcdConfig",
    "EtcdRequestFailed",
    "EtcdTLSError",
    "EtcdUnavailable",
    "Event",
    "EventStream",
    "JobNotFound",
    "KeyKind",
    "KeyLayout",
    "Leadership",
    "Lease",
    "MachineIdInUse",
    "Registry",
    "RegistryConflict",
    "RegistryError",
    "Removed",
    "Resync",
    "RolloutInProgress",
    "Snapshot",
    "Submitted",
    "UnitExists",
    "Update",
    "WatchCompacted",
    "effective_machines",
    "effective_metadata",
    "merge_metadata",
    "with_facts",
]
