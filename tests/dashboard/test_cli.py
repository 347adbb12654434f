"""`fleetctl dashboard` stays out of fleetctl's way: registered, but loaded only when it runs."""

from __future__ import annotations

import subprocess
import sys

from fleetd.cli import main


def test_fleetctl_loads_no_dashboard_code_until_it_runs() -> None:
    code = (
        "import sys, fleetd.cli;"
        "assert not [m for m in sys.modules if m.startswith('fleetd.dashboard')"
        " or m in ('http.server', 'webbrowser')], sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_dashboard_help(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["dashboard", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--port" in out and "--no-open" in out and "127.0.0.1" in out


def test_a_port_in_use_is_an_error(capsys) -> None:  # type: ignore[no-untyped-def]
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--endpoint", "unix:///nonexistent/fleet.sock", "dashboard", "--no-open",
                     "--port", str(port)]) == 1  # fmt: skip
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
