"""Numbers as systemd reads resource settings: sizes with a base-1024 suffix (`512M`, `8G`,
`1.5T`; `B` is bytes), CPU quotas in percent (`CPUQuota=200%` is 2 CPUs). Pure; shared by the
metadata comparisons and the reservations."""

from __future__ import annotations

import functools
import re

__all__ = ["cpus", "number", "size"]

_NUMBER = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))([KMGTPEB]?)")
_SUFFIX = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50,
           "E": 1 << 60}  # fmt: skip
_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]*)?)%")


@functools.lru_cache(maxsize=4096)
def number(text: str) -> float | None:
    """`text` as a number (`8`, `-1.5`, `512M` = 536870912.0), or None."""
    match = _NUMBER.fullmatch(text.strip())
    return float(match.group(1)) * _SUFFIX[match.group(2)] if match else None


def size(text: str) -> int | None:
    """A size in bytes (`512M`, `1.5G`, `1048576`), or None for anything else (negative
    numbers, percentages, `infinity`)."""
    value = number(text)
    return int(value) if value is not None and value >= 0 else None


def cpus(text: str, *, percent: bool = False) -> float | None:
    """A number of CPUs: `1.5` (or, with `percent`, systemd's `CPUQuota=150%`), or None."""
    text = text.strip()
    if percent:
        match = _PERCENT.fullmatch(text)
        return float(match.group(1)) / 100 if match else None
    value = number(text) if text and text[-1].isdigit() else None
    return value if value is not None and value >= 0 else None
