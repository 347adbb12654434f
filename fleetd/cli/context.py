"""What every fleetctl command shares: the global flags, the API client, failures, waiting.

Stdlib and click only at import time: the API client is imported when a command first needs
it, so `fleetctl version` and `fleetctl help` start without loading any HTTP machinery.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import click

from fleetd.cli.output import machine_full_legend

__all__ = [
    "ATTEMPT_SECONDS",
    "DEFAULT_SETTLE",
    "Failure",
    "Settings",
    "api_error_line",
    "api_failure",
    "block_options",
    "echo_lines",
    "emit_json",
    "require_units",
    "settings",
    "unit_options",
    "wait_for_units",
]

# One fleet "block attempt" polled for up to 2 s (defaultSleepTime); --block-attempts=N waits
# N times that long in total.
ATTEMPT_SECONDS = 2.0
# How long a service whose start ends at fork/exec (Type=simple, exec, idle) must stay active
# before `start` reports it launched: a process that dies at once is reported as failed.
DEFAULT_SETTLE = 1.0
DEFAULT_ENDPOINT = "unix:///var/run/fleet.sock"


class Failure(click.ClickException):
    """A command failed: `message` (may be several lines, may be empty) goes to stderr as is."""

    def __init__(self, message: str = "", exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        if self.message:
            click.echo(self.message, err=True)


@dataclass
class Settings:
    """The global flags, as given (or from FLEETCTL_* variables)."""

    endpoint: str = DEFAULT_ENDPOINT
    request_timeout: float = 3.0
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tunnel: str = ""
    strict_host_key_checking: bool = True
    known_hosts_file: str = "~/.fleetctl/known_hosts"
    ssh_username: str = "core"
    ssh_timeout: float = 10.0
    debug: bool = False
    # Where a flag's value came from when not the command line: {"ca_file": "FLEETCTL_CA_FILE"}.
    from_env: dict[str, str] = field(default_factory=dict, repr=False)
    _client: Any = field(default=None, repr=False)
    _tunnel: Any = field(default=None, repr=False)

    def origin(self, flag: str) -> str:
        """How the user gave a global flag (`ca_file`): `--ca-file` or `FLEETCTL_CA_FILE`."""
        return self.from_env.get(flag) or "--" + flag.replace("_", "-")

    def client(self) -> Any:
        """The API client for --endpoint (created on first use), through --tunnel if given.

        An endpoint or TLS file it cannot use is a Failure naming the flag (or variable) and
        the value: `Error: --ca-file /x/ca.pem: No such file or directory`.
        """
        if self._client is None:
            from fleetd.api.client import BadEndpoint, BadTLSFile, Client

            endpoint = self.endpoint.split(",")[0]  # fleet uses the first of a list
            tunnel = self._open_tunnel() if self.tunnel else None
            try:
                client = Client(
                    endpoint,
                    timeout=self.request_timeout,
                    ca_file=self.ca_file or None,
                    cert_file=self.cert_file or None,
                    key_file=self.key_file or None,
                    via=tunnel.socket if tunnel is not None else None,
                )
            except BadTLSFile as err:
                flag = self.origin(err.option)
                raise Failure(f"Error: {flag} {err.path}: {err.reason}") from None
            except BadEndpoint as err:
                flag = self.origin("endpoint")
                if repr(endpoint) not in err.message:  # fleet's messages do not name it
                    flag += f" {endpoint or chr(34) * 2}"  # an empty one shown as ""
                raise Failure(
                    f"Error: {flag}: {err.message} "
                    "(use unix:///path, http://host:port or https://host:port)"
                ) from None
            if tunnel is not None:
                tunnel.open(self, endpoint)  # the endpoint is valid: now start ssh
            self._client = client
        return self._client

    def _open_tunnel(self) -> Any:
        from fleetd.cli.tunnel import Tunnel  # only with --tunnel: loads subprocess, ctypes

        self._tunnel = Tunnel()
        ctx = click.get_current_context(silent=True)
        if ctx is not None:
            ctx.find_root().call_on_close(self.close_tunnel)
        else:  # used outside a fleetctl command
            import atexit

            atexit.register(self.close_tunnel)
        return self._tunnel

    def close_tunnel(self) -> None:
        """Stop the --tunnel's ssh (when the command ends, or before it execs another one)."""
        if self._tunnel is not None:
            self._tunnel.close()
            self._tunnel = None

    def debug_log(self, message: str) -> None:
        if self.debug:
            click.echo(f"DEBUG: {message}", err=True)


ENDPOINT_HINT = "is fleetd running? set FLEETCTL_ENDPOINT or --endpoint"


def api_error_line(err: Any) -> str:
    """The one line for an API client error no command reported in its own words.

    An API nobody serves (CannotConnect) gets the hint where to point fleetctl; other
    failures to reach it (lost, TLS, permission) name the endpoint already; an answer of the
    API shows its HTTP code.
    """
    from fleetd.api.client import CannotConnect

    if isinstance(err, CannotConnect):
        return f"Error: {err.message}; {ENDPOINT_HINT}"
    if err.code == 0:
        return f"Error: {err.message}"
    return f"Error: {err.message} (HTTP {err.code})"


def api_failure(prefix: str, err: Exception) -> Failure:
    """A command's failure on an API error: `prefix: the API's message`, or the one line of an
    API nobody serves, whatever the command was doing."""
    from fleetd.api.client import CannotConnect

    if isinstance(err, CannotConnect):
        return Failure(api_error_line(err))
    return Failure(f"{prefix}: {getattr(err, 'message', None) or err}")


def settings() -> Settings:
    """The Settings of the running command."""
    ctx = click.get_current_context()
    obj = ctx.find_object(Settings)
    return obj if obj is not None else Settings()


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def require_units(args: tuple[str, ...]) -> None:
    if not args:
        raise Failure("No units given")


def unit_options(unit: Any) -> list[dict[str, str]]:
    """A UnitFile's options as the API carries them."""
    return [{"section": o.section, "name": o.name, "value": o.value} for o in unit.options]


def block_options(*, lines: bool = False, settle: bool = False) -> Any:
    """The options of a command that waits for its units: --no-block and --block-attempts;
    with `lines`, --lines (the journal of each unit that failed); with `settle`, --settle."""
    options = [
        click.option(
            "--no-block",
            is_flag=True,
            help="Do not wait until the units have reached the requested state.",
        ),
        click.option(
            "--block-attempts",
            type=int,
            default=0,
            show_default=True,
            help="Wait until the units reach the requested state, at most N x 2 s (0: forever).",
        ),
    ]
    if lines:
        options.append(
            click.option(
                "--lines",
                type=click.IntRange(min=0),
                default=10,
                show_default=True,
                help="Journal lines to show of each unit that failed (0: none).",
            )
        )
    if settle:
        options.append(
            click.option(
                "--settle",
                type=click.FloatRange(min=0, max=600),
                default=DEFAULT_SETTLE,
                show_default=True,
                help="Seconds a newly started simple service must stay active before it counts "
                "as launched (a process that dies at once is a failure); 0 turns it off.",
            )
        )

    def decorate(f: Any) -> Any:
        for option in reversed(options):  # the first option listed first in --help
            f = option(f)
        return f

    return decorate


def block_timeout(no_block: bool, block_attempts: int) -> float | bool | None:
    """False for --no-block, None to wait forever (0 attempts), else seconds."""
    if no_block:
        return False
    if block_attempts > 0:
        return block_attempts * ATTEMPT_SECONDS
    return None


class _Progress:
    """`3/10 units ...` on stderr, rewritten in place; only when stderr is a terminal."""

    def __init__(self, total: int, state: str) -> None:
        self.total, self.done, self.state = total, 0, state
        self.shown = False
        self.enabled = total > 1 and _isatty(sys.stderr)

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self.shown = False

    def show(self) -> None:
        if self.enabled and self.done < self.total:
            sys.stderr.write(
                f"\r\x1b[KWaiting for {self.total - self.done} of {self.total} units "
                f"to report state {self.state}..."
            )
            sys.stderr.flush()
            self.shown = True


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def wait_for_units(
    names: Sequence[str],
    state: str,
    *,
    timeout: float | None,
    active: bool = False,
    lines: int = 10,
    settle: float = 0.0,
    quiet: frozenset[str] = frozenset(),
) -> list[str]:
    """Wait (server push) until every unit reports `state` or can no longer reach it; print
    fleet's line for each (but for the `quiet` units that reach it: those that were there
    already), and for a unit that failed why (systemd's words) and its journal.

    Returns fleet's error lines for the units that did not get there (empty when all did).
    """
    if not names:
        return []
    progress = _Progress(len(names), state)
    progress.show()
    errors: list[str] = []
    failed: list[dict[str, Any]] = []
    events: Iterable[dict[str, Any]] = (
        settings().client().wait(
            list(names), state, active=active, timeout=timeout, settle=settle
        )
    )
    try:
        for event in events:
            if event.get("done"):
                for pending in event.get("pending") or ():
                    line = f"timed out waiting for unit {pending['name']} to report state {state}"
                    if pending.get("reason"):
                        line += f" ({pending['reason']})"
                    errors.append(line)
                break
            progress.clear()
            if event.get("failed"):
                errors.append(failure_line(event))
                failed.append(event)
                if not event.get("unschedulable"):
                    click.echo(unit_state_line(event))
                    explain_failure(event, lines)
            elif event.get("name") not in quiet:
                click.echo(unit_state_line(event))
            progress.done += 1
            progress.show()
    finally:
        progress.clear()
        close = getattr(events, "close", None)
        if close is not None:
            close()
    return errors


def failure_line(event: dict[str, Any]) -> str:
    """`unit bad.service failed on 5ab7f3b4: systemd reports ...` (fleet's error form)."""
    from fleetd.unit import short_id

    where = f" on {short_id(event['machineID'])}" if event.get("machineID") else ""
    verb = "" if event.get("unschedulable") else f" failed{where}:"
    return f"unit {event['name']}{verb} {event.get('reason') or ''}".rstrip()


def explain_failure(event: dict[str, Any], lines: int) -> None:
    """What systemd said of a failed unit, then its last journal lines, on stderr."""
    from fleetd.api.client import APIError, MachineUnreachable
    from fleetd.unit import short_id

    name = event["name"]
    click.echo(f"{name}: {event.get('reason') or 'failed'}", err=True)
    if lines <= 0:
        return
    machine = event.get("machineID") or ""
    try:
        chunks = settings().client().journal(
            name, lines=lines, follow=False, machine_id=machine or None
        )
        text = b"".join(chunks).decode("utf-8", "replace")
    except MachineUnreachable as err:  # fleet's way: journalctl there, over SSH
        from fleetd.cli.remote import journal_text_over_ssh

        try:
            text = journal_text_over_ssh(name, err, lines)
        except Failure as why:
            click.echo(f"{name}: journal unavailable: {why.message}", err=True)
            return
    except APIError as err:  # say why there is no journal, and go on with the other units
        click.echo(f"{name}: journal unavailable: {err.message or err}", err=True)
        return
    where = short_id(machine) or "its machine"
    click.echo(f"{name}: last {lines} journal lines on {where}:", err=True)
    click.echo(text, err=True, nl=not text.endswith("\n"))


def unit_state_line(event: dict[str, Any]) -> str:
    """`Unit hello.service launched on 5ab7f3b4.../127.0.0.11` (no ` on ...` if unscheduled)."""
    msg = f"Unit {event['name']} {event.get('currentState') or ''}".rstrip()
    machine = event.get("machineID") or ""
    if machine:
        msg += f" on {machine_full_legend(machine, event.get('machineIP') or '', full=False)}"
    return msg


def report_wait_errors(errors: list[str]) -> None:
    """fleet's two error forms: one `Error waiting for units:` line per unit, then the summary."""
    if errors:
        lines = [f"Error waiting for units: {e}" for e in errors]
        lines.append(f"Error waiting for unit states, exit status: {errors[0]}")
        raise Failure("\n".join(lines))


def echo_lines(lines: Iterable[Any]) -> None:
    """Print a plan's lines (`fleetd.reconcile.submit.Line`): each on stdout, or on stderr."""
    for line in lines:
        click.echo(line.text, err=line.stderr)
