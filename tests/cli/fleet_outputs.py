"""What fleet 1.0 printed (copied from ../shared/docs/fleet-outputs/, TABs included), as blocks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent / "fleet_outputs"


@dataclass(frozen=True)
class Block:
    file: str
    command: str  # without the leading "$ fleetctl "
    output: str  # every line, each ending in "\n"
    rc: int


def blocks(name: str) -> list[Block]:
    """The `$ fleetctl ...` / output / `[rc=N]` blocks of one capture file."""
    out: list[Block] = []
    command, lines = "", []
    for line in (HERE / name).read_text().splitlines(keepends=True):
        if line.startswith("$ fleetctl "):
            command, lines = line[len("$ fleetctl ") :].split("   #")[0].strip(), []
        elif line.startswith("[rc="):
            out.append(Block(name, command, "".join(lines), int(line[4:-2])))
        else:
            lines.append(line)
    return out


def all_blocks() -> list[Block]:
    return [b for f in sorted(HERE.glob("*.txt")) for b in blocks(f.name)]


def block(name: str, command: str, index: int = 0) -> Block:
    return [b for b in blocks(name) if b.command == command][index]


def is_table(b: Block) -> bool:
    return "list-" in b.command and b.rc == 0 and "\t" in b.output and "Error" not in b.output


# The machines of the captures.
MACHINES = [
    {"id": "5ab7f3b47ecc47a0a777884d749db537", "primaryIP": "127.0.0.11",
     "metadata": {"role": "web", "machine": "m1"}},
    {"id": "929c22af894a4c82b6a758451e974da7", "primaryIP": "127.0.0.12",
     "metadata": {"machine": "m2", "role": "db"}},
    {"id": "8197e13c2e034e6d9486d5b4c736f323", "primaryIP": "127.0.0.13",
     "metadata": {"machine": "m3", "role": "misc"}},
]  # fmt: skip
IPS = {m["id"]: m["primaryIP"] for m in MACHINES}
M1, M2, M3 = (m["id"] for m in MACHINES)

HELLO_TEXT = (
    "[Unit]\nDescription=Hello World\n\n[Service]\n"
    "ExecStart=/bin/sh -c 'while true; do echo Hello World; sleep 1; done'\n"
)
HELLO_OPTIONS = [
    {"section": "Unit", "name": "Description", "value": "Hello World"},
    {"section": "Service", "name": "ExecStart",
     "value": "/bin/sh -c 'while true; do echo Hello World; sleep 1; done'"},
]  # fmt: skip
