#!/usr/bin/env python3
"""Write fleetd's commented configuration file, made from the option definitions.

    python scripts/fleet_conf.py [FILE]        (default: standard output)

Every option fleetd reads (`fleetd.config.OPTIONS`, the deprecated ones left out) appears once,
commented out, with its default, what it means and what SIGHUP does with it, so the file
cannot drift from `fleetd --help` and the man page. The Debian package installs it as its
conffile /etc/fleet/fleet.conf (debian/rules); uncommenting a line as it is changes nothing.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from fleetd.config import OPTIONS, OnReload

__all__ = ["fleet_conf", "main"]

HEADER = """\
# /etc/fleet/fleet.conf: fleetd's configuration. fleetd(8), docs/configuration.md.
#
# Only root may read it (mode 0600): it may hold etcd_password.
# One name=value per line; # or ; starts a comment. Each option below is commented out and
# shows its default: uncomment and change what this host needs (etcd_servers and the etcd_*
# certificate files first, then public_ip and metadata). An unknown name or a malformed value
# stops fleetd at start with one line naming it (`journalctl -u fleet`).
# FLEET_<NAME> environment variables (a drop-in: `systemctl edit fleet.service`) and fleetd's
# flags override this file.
#
# `systemctl reload fleet` re-reads it (SIGHUP); each option's [reload: ...] says when a new
# value takes effect. `systemctl restart fleet` leaves the running units alone.
"""

ON_RELOAD = {
    OnReload.APPLIED: "reload: applied at once",
    OnReload.RESTART: "reload: at the next restart",
    OnReload.UNUSED: "accepted for fleet's sake, no effect",
}


def fleet_conf() -> str:
    lines = [HEADER.rstrip("\n")]
    for option in OPTIONS:
        if option.deprecated:
            continue
        about = f"{option.help} [{ON_RELOAD[option.on_reload]}]"
        lines.append("")
        lines += textwrap.wrap(about, 98, initial_indent="# ", subsequent_indent="# ")
        lines.append(f"#{option.name}={option.default}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print("usage: fleet_conf.py [FILE]", file=sys.stderr)
        return 2
    if argv:
        Path(argv[0]).write_text(fleet_conf())
    else:
        sys.stdout.write(fleet_conf())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
