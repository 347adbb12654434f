"""The bundle's one program (packaging/fleetd.spec): `fleetd`, or `fleetctl` when started under
that name (the bundle's `fleetctl` is a symlink to `fleetd`, and so are /usr/bin's in the
sysext image). One program rather than two: the standard library, fleetd and its dependencies
are in the bundle once, and each command starts as fast as from a venv.

PyInstaller's bootloader starts the program with LD_LIBRARY_PATH pointing into the bundle, so
its Python finds the bundle's libraries. The children of fleetd and fleetctl (systemctl,
journalctl, nsenter, ssh) are the host's programs and must load the host's libraries: the
variable goes back to what it was before the bootloader set it, for them, before anything runs.
"""

import os
import sys


def restore_library_path(environ: "os._Environ[str]") -> None:
    """LD_LIBRARY_PATH as the user had it (the bootloader keeps it in LD_LIBRARY_PATH_ORIG)."""
    original = environ.pop("LD_LIBRARY_PATH_ORIG", None)
    if original is None:
        environ.pop("LD_LIBRARY_PATH", None)
    else:
        environ["LD_LIBRARY_PATH"] = original


def main() -> None:
    if getattr(sys, "frozen", False):
        restore_library_path(os.environ)
    if os.path.basename(sys.argv[0]).startswith("fleetctl"):
        from fleetd.cli import main as fleetctl

        sys.exit(fleetctl())
    from fleetd.main import main as fleetd

    fleetd()


if __name__ == "__main__":
    main()
