"""fleetctl: fleet's command-line client.

Kept light on purpose (it must start in well under 150 ms): it imports click and the standard
library only; anything heavier is imported inside the command that needs it.
"""

from __future__ import annotations

import sys

import click

from fleetd import __version__

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


class PrefixGroup(click.Group):
    """A group whose commands may be called by any unique prefix, as fleet's cobra CLI allows."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        matches = [name for name in self.list_commands(ctx) if name.startswith(cmd_name)]
        if len(matches) == 1:
            return super().get_command(ctx, matches[0])
        if len(matches) > 1:
            ctx.fail(f"ambiguous command {cmd_name!r}: could be {', '.join(sorted(matches))}")
        return None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        _, command, rest = super().resolve_command(ctx, args)
        return (command.name if command else None), command, rest


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"fleetctl version {__version__}")
        ctx.exit(0)


@click.group(
    cls=PrefixGroup,
    context_settings=CONTEXT_SETTINGS,
    invoke_without_command=True,
    help=f"fleetctl is a command-line interface to fleet, the cluster-wide init system.\n\n"
    f"VERSION: {__version__}",
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Print the version and exit.",
)
@click.pass_context
def fleetctl(ctx: click.Context) -> None:
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@fleetctl.command(help="Print the version and exit")
def version() -> None:
    click.echo(f"fleetctl version {__version__}")


@fleetctl.command(name="help", help="Help about any command")
@click.argument("command", required=False)
@click.pass_context
def help_(ctx: click.Context, command: str | None) -> None:
    parent = ctx.parent
    assert parent is not None
    if command is None:
        click.echo(parent.get_help())
        return
    group = parent.command
    assert isinstance(group, click.Group)
    sub = group.get_command(parent, command)
    if sub is None:
        raise click.UsageError(f"unknown command {command!r}", ctx=parent)
    with click.Context(sub, info_name=sub.name, parent=parent) as sub_ctx:
        click.echo(sub.get_help(sub_ctx))


def main(argv: list[str] | None = None) -> int:
    """Entry point of `fleetctl` (and of `fleetd ctl`)."""
    try:
        fleetctl.main(args=argv, prog_name="fleetctl", standalone_mode=False)
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as err:
        err.show()
        return 1
    except click.Abort:
        click.echo("Aborted.", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
