"""The seed's unit files (examples/seed, the walkthrough's), for tests that use the real ones."""

from __future__ import annotations

from pathlib import Path

from fleetd.unit import UnitFile, parse_unit

SEED = Path(__file__).resolve().parents[1] / "examples" / "seed"


def seed_text(name: str) -> str:
    """The text of examples/seed/`name`."""
    return (SEED / name).read_text()


def seed_unit(name: str) -> UnitFile:
    """examples/seed/`name`, parsed."""
    return parse_unit(seed_text(name))
