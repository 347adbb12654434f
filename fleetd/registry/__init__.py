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
    UnitExists,
    WatchCompacted,
)
from fleetd.registry.events import (
    Event,
    JobChanged,
    JobDeleted,
    LeaderChanged,
    MachineDown,
    MachineUp,
    MetadataChanged,
    MetadataDeleted,
    RestartDeleted,
    RestartRequested,
    Resync,
    ScheduleChanged,
    ScheduleDeleted,
    Snapshot,
    StateChanged,
    StateDeleted,
    UnitDeleted,
    UnitStored,
)
from fleetd.registry.keys import DEFAULT_PREFIX, KeyLayout
from fleetd.registry.leases import Lease
from fleetd.registry.metadata import effective_machines, effective_metadata, merge_metadata
from fleetd.registry.registry import UNITS_SNAPSHOT_MAX, Leadership, Registry, Submitted
from fleetd.registry.watch import EventStream

__all__ = [
    "DEFAULT_PREFIX",
    "UNITS_SNAPSHOT_MAX",
    "EtcdAuthError",
    "EtcdConfig",
    "EtcdRequestFailed",
    "EtcdTLSError",
    "EtcdUnavailable",
    "Event",
    "EventStream",
    "JobChanged",
    "JobDeleted",
    "JobNotFound",
    "KeyLayout",
    "LeaderChanged",
    "Leadership",
    "Lease",
    "MachineDown",
    "MachineIdInUse",
    "MachineUp",
    "MetadataChanged",
    "MetadataDeleted",
    "Registry",
    "RegistryConflict",
    "RegistryError",
    "RestartDeleted",
    "RestartRequested",
    "Resync",
    "ScheduleChanged",
    "ScheduleDeleted",
    "Snapshot",
    "StateChanged",
    "StateDeleted",
    "Submitted",
    "UnitDeleted",
    "UnitExists",
    "UnitStored",
    "WatchCompacted",
    "effective_machines",
    "effective_metadata",
    "merge_metadata",
]
