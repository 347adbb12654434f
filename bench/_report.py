"""Write a benchmark's figures into its own block of docs/benchmarks.md.

Each benchmark owns the block between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`; running
it again replaces only that block, with the date, commit and machine it ran on.
"""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\nWritten by `make bench`; every time figure is a ratio against a baseline"
    " measured in the same run.\n"
)


def machine_line() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
            cwd=DOC.parent,
        ).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    date = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"_{date}, commit {commit}, {os.cpu_count()} cores, {mem_gib:.0f} GiB_"


def write_block(name: str, markdown: str) -> None:
    """Replace (or append) the block `name` of docs/benchmarks.md with `markdown`.

    Under BENCH_QUICK (a smoke run of a script) nothing is written."""
    if os.environ.get("BENCH_QUICK"):
        return
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{markdown.rstrip()}\n\n{machine_line()}\n{end}"
    text = DOC.read_text() if DOC.exists() else HEADER
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block + after
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
