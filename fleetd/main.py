"""`fleetd`: run the daemon (flags for every fleet.conf option), and its helper commands:
`fleetd ctl ...` (fleetctl), `fleetd leave`, `fleetd version`."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import click

from fleetd import __version__
from fleetd.config import OPTIONS


def _option_flags(func):  # type: ignore[no-untyped-def]
    """One `--name` flag per fleet.conf option (dashes or underscores both work)."""
    for option in reversed(OPTIONS):
        names = dict.fromkeys(["--" + option.name.replace("_", "-"), "--" + option.name])
        func = click.option(
            *names,
            default=None,
            metavar="VALUE",
            help=option.help + (" (ignored: deprecated)" if option.deprecated else ""),
            hidden=option.deprecated,
        )(func)
    return func


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", message="fleetd version %(version)s")
@click.option(
    "--config",
    "config_path",
    default=None,
    metavar="FILE",
    help="configuration file (default /etc/fleet/fleet.conf when it exists)",
)
@_option_flags
@click.pass_context
def fleetd(ctx: click.Context, config_path: str | None, **options: str | None) -> None:
    """fleetd: the cluster-level init system's daemon. Without a command, run it.

    Settings come from flags, then FLEET_<OPTION> environment variables, then the
    configuration file, then defaults.
    """
    if ctx.invoked_subcommand is not None:
        return
    from fleetd.daemon import run

    flags = {name: value for name, value in options.items() if value is not None}
    sys.exit(run(config_path, flags))


@fleetd.command()
def version() -> None:
    """Print the version and exit."""
    click.echo(f"fleetd version {__version__}")


@fleetd.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def ctl(args: tuple[str, ...]) -> None:
    """Run fleetctl: `fleetd ctl list-units` is `fleetctl list-units`."""
    from fleetd import cli

    sys.exit(cli.main(list(args)))


@fleetd.command()
@click.option(
    "--runtime-dir",
    default="/run/fleet",
    show_default=True,
    help="the running fleetd's runtime_dir",
)
def leave(runtime_dir: str) -> None:
    """Make this machine's running fleetd leave the cluster: its units stop here and the
    engine places them elsewhere at once; then fleetd exits."""
    pid_file = Path(runtime_dir) / "fleetd.pid"
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGUSR2)
    except (OSError, ValueError) as err:
        raise click.ClickException(f"no running fleetd found through {pid_file}: {err}") from None
    click.echo(f"fleetd (pid {pid}) is leaving the cluster")


def main() -> None:
    fleetd(prog_name="fleetd")


if __name__ == "__main__":
    main()
