"""`make demo`: what fleetd can show today, run on the walkthrough's own unit files.

The walkthrough of ../shared/seed needs a running cluster (etcd + several machines, each with
its own systemd and fleetd); until the sandbox exists this demo shows, honestly, the part that
does exist: fleet's unit-file model applied to the walkthrough's units.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fleetd.unit import UnitNameError, mangle_name, parse_name, parse_unit

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "seed"


def _show(title: str, body: str) -> None:
    print(f"\n== {title}")
    print(body.rstrip("\n"))


def main() -> int:
    hello = parse_unit((EXAMPLES / "hello.service").read_text())
    apache = parse_unit((EXAMPLES / "apache@.service").read_text())

    _show("the name `fleetctl cat hello` means", mangle_name("hello"))
    _show("fleetctl cat hello.service (serialized as fleet stores it)", hello.serialize())
    _show("HASH column of list-unit-files for hello.service", hello.short_hash)

    template = parse_name("apache@.service")
    instance = parse_name("apache@80.service")
    _show(
        "apache@.service / apache@80.service",
        f"template={template.is_template} instance of {instance.template}: {instance.instance}",
    )
    req = apache.requirements("apache@80.service")
    _show(
        "[X-Fleet] of apache@80.service (X-Conflicts read as Conflicts)",
        f"Conflicts={' '.join(req.conflicts)}  conflicts with apache@8888.service: "
        f"{req.conflicts_with('apache@8888.service')}",
    )
    try:
        parse_name("../../etc/passwd.service")
    except UnitNameError as err:
        _show("a name that would escape the units directory", f"refused: {err}")

    print(
        "\nThe multi-machine walkthrough (etcd, namespaced systemd machines, fleetd, fleetctl)"
        "\nis not built yet: it arrives with the sandbox cluster (issue #10). Nothing above was"
        "\nsimulated; `make test` runs the whole suite."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
