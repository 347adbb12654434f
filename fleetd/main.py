"""`fleetd`: the daemon's command line, and `fleetd ctl ...` as another way to run fleetctl."""

from __future__ import annotations

import sys

import click

from fleetd import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", message="fleetd version %(version)s")
def fleetd() -> None:
    """fleetd: the cluster-level init system's daemon and tools."""


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


def main() -> None:
    fleetd(prog_name="fleetd")


if __name__ == "__main__":
    main()
