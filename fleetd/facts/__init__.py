"""Machine facts: what fleetd measures about its machine at start (CPUs, memory, free disk,
kernel, OS), published with its registration as read-only metadata under `fleet.` so that
`MachineMetadata=` clauses can ask for them (`fleet.cpus>=4`). docs/units.md lists the keys.

`parse.py` is pure (file contents in, facts out: table-tested); `measure.py` reads the files.
"""

from fleetd.facts.measure import measure
from fleetd.facts.parse import CPUS, DISK, KERNEL, KEYS, MEMORY, OS, OS_VERSION

__all__ = ["CPUS", "DISK", "KERNEL", "KEYS", "MEMORY", "OS", "OS_VERSION", "measure"]
