"""How a fleetctl command fails: its message on stderr, as is, and its exit code. Apart from
fleetd/cli/context.py so that modules the context loads lazily (the tunnel) can raise it."""

from __future__ import annotations

from typing import Any

import click

__all__ = ["Failure"]


class Failure(click.ClickException):
    """A command failed: `message` (may be several lines, may be empty) goes to stderr as is."""

    def __init__(self, message: str = "", exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        if self.message:
            click.echo(self.message, err=True)
