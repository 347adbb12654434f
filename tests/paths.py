"""Short directories for unix sockets.

A unix socket's path must fit in 108 bytes (sun_path). pytest's tmp_path lies under TMPDIR and is
named after the test, which a parametrized test's id easily makes too long; these live directly
in /tmp (not TMPDIR, which may itself be long) with a short random name.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def short_dir(prefix: str = "fsock") -> Iterator[Path]:
    """A fresh directory /tmp/PREFIXxxxxxxxx, removed with all it holds on leaving."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
