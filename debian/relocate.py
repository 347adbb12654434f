"""Make the virtual environment built at BUILT the one installed at PREFIX (debian/rules).

    python3 debian/relocate.py BUILT PREFIX

pip wrote BUILT (the package's build tree) into the scripts' `#!` lines, pyvenv.cfg, the
activation scripts and the records of where each distribution came from. Here the scripts name
PREFIX's python; the activation scripts and `direct_url.json` go (nothing activates this
environment, nothing installs into it); each RECORD gets the new hash and size of the files
changed and loses the files removed, so the package is the same wherever it was built. Any file
still naming BUILT is an error.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import sys
from pathlib import Path

GONE = ("activate", "activate.csh", "activate.fish", "Activate.ps1")


def relocate(built: Path, prefix: str) -> None:
    changed: list[Path] = []
    for script in sorted((built / "bin").iterdir()):
        if script.is_symlink() or not script.is_file():
            continue
        if script.name in GONE:
            script.unlink()
            changed.append(script)
            continue
        data = script.read_bytes()
        old = b"#!" + str(built / "bin").encode() + b"/"
        if data.startswith(old):
            script.write_bytes(b"#!" + prefix.encode() + b"/bin/" + data[len(old) :])
            changed.append(script)
    for url in built.glob("lib/python*/site-packages/*.dist-info/direct_url.json"):
        url.unlink()
        changed.append(url)
    cfg = built / "pyvenv.cfg"
    cfg.write_text(cfg.read_text().replace(str(built), prefix))
    for record in built.glob("lib/python*/site-packages/*.dist-info/RECORD"):
        _rewrite(record, {p.resolve() for p in changed})


def _rewrite(record: Path, changed: set[Path]) -> None:
    rows = []
    for row in csv.reader(io.StringIO(record.read_text())):
        path = (record.parent.parent / row[0]).resolve()
        if path in changed:
            if not path.exists():
                continue
            data = path.read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            row = [row[0], f"sha256={digest.decode()}", str(len(data))]
        rows.append(row)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    record.write_text(out.getvalue())


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: relocate.py BUILT PREFIX", file=sys.stderr)
        return 2
    relocate(Path(argv[0]).resolve(), argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
