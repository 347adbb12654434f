"""Running the dashboard from fleetctl: print the URL, open a browser when there is one, serve
until Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import click

from fleetd.dashboard.server import Dashboard

__all__ = ["run"]


def _can_open_browser() -> bool:
    # without a display, webbrowser would start a text browser in this terminal
    return sys.platform == "darwin" or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )


def run(client_factory: Callable[[], Any], *, endpoint: str, port: int, open_browser: bool) -> None:
    try:
        dash = Dashboard(client_factory, port=port, endpoint=endpoint)
    except OSError as err:
        raise click.ClickException(f"cannot listen on 127.0.0.1:{port}: {err}") from None
    click.echo(f"fleetctl dashboard for {endpoint} at {dash.url}")
    click.echo("(the token in the URL is the only key to it; Ctrl-C stops it)")
    sys.stdout.flush()
    if open_browser and _can_open_browser():
        import webbrowser

        webbrowser.open(dash.url)

    def stop(*_: object) -> None:
        threading.Thread(target=dash.shutdown, daemon=True).start()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        dash.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        dash.hub.stop()
        dash.httpd.server_close()
