"""`fleetctl dashboard`: registration only; the server lives in `fleetd.dashboard` and is
imported when the command runs (fleetctl's other commands never load it)."""

from __future__ import annotations

import click

from fleetd.cli.context import settings

__all__ = ["COMMANDS"]


@click.command(help="Serve a live web view of the cluster on 127.0.0.1 (token-protected URL)")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port on 127.0.0.1 to listen on (0: a free one).")  # fmt: skip
@click.option("--no-open", is_flag=True, help="Do not open the page in a web browser.")
def dashboard(port: int, no_open: bool) -> None:
    from fleetd.dashboard.cli import run

    s = settings()
    # made here, in the main thread: a bad endpoint or TLS file is said now, in one line, not
    # later in the page; and a --tunnel's ssh lives as long as the command
    s.client()
    run(s.client, endpoint=s.endpoint.split(",")[0], port=port, open_browser=not no_open)


COMMANDS = [dashboard]
