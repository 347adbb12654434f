"""systemd over D-Bus: the only code that knows D-Bus (`dbus.py` is the only dbus-fast importer).

Public API: `SystemdManager(SystemdConfig(...))`, `UnitState`, `UnitChanges`, `JournalStream`,
`unit_status`, `UnitDir`, and the errors `SystemdError`, `BusUnavailable`, `BadUnitName`.
"""

from fleetd.systemd.dbus import BusUnavailable, SystemdError
from fleetd.systemd.journal import JournalStream
from fleetd.systemd.manager import LOAD_FAILED, SystemdConfig, SystemdManager
from fleetd.systemd.states import UnitChanges, UnitState
from fleetd.systemd.status import unit_status
from fleetd.systemd.unitdir import BadUnitName, UnitDir

__all__ = [
    "LOAD_FAILED",
    "BadUnitName",
    "BusUnavailable",
    "JournalStream",
    "SystemdConfig",
    "SystemdError",
    "SystemdManager",
    "UnitChanges",
    "UnitDir",
    "UnitState",
    "unit_status",
]
