"""Numbers as systemd reads resource settings: sizes with a base-1024 suffix (`512M`, `8G`,
`1.5T`; `B` is bytes), CPU quotas in percent (`CPUQuota=200%` is 2 CPUs). Pure; shared by the
metadata comparisons and the reservations."""

from __future__ import annotations

import functools
import re

__all__ = ["cpus", "number", "size", "timespan"]

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


_SPAN = re.compile(r"([0-9]+(?:\.[0-9]*)?)\s*([a-z]*)")
_SPAN_UNITS = {
    "": 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "ms": 0.001, "msec": 0.001,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
}  # fmt: skip


def timespan(text: str) -> float | None:
    """A time span in seconds as systemd writes them (`10s`, `5min`, `1min 30s`, `500ms`, a
    bare number is seconds), or None."""
    text = text.strip().lower()
    if not text:
        return None
    total, at = 0.0, 0
    for match in _SPAN.finditer(text):
        if text[at : match.start()].strip() or match.group(2) not in _SPAN_UNITS:
            return None
        total += float(match.group(1)) * _SPAN_UNITS[match.group(2)]
        at = match.end()
    return total if at and not text[at:].strip() else None
