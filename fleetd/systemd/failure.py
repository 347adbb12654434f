"""Why a unit failed, in systemd's own words (pure: no D-Bus here, the manager reads the props).

`failed_process(props)` turns a service's properties (one `GetAll` of
`org.freedesktop.systemd1.Service`) into the line `systemctl status` shows for the process that
failed: ``ExecStart=/bin/false (code=exited, status=1/FAILURE)``.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from typing import Any

from fleetd.model import BAD_LOAD_STATES

__all__ = ["BAD_LOAD_STATES", "RESULT_IFACES", "exit_status_text", "failed_process"]

# Unit types whose interface carries `Result` (a target or a device has none).
RESULT_IFACES = {
    "service": "org.freedesktop.systemd1.Service",
    "socket": "org.freedesktop.systemd1.Socket",
    "mount": "org.freedesktop.systemd1.Mount",
    "swap": "org.freedesktop.systemd1.Swap",
    "timer": "org.freedesktop.systemd1.Timer",
    "path": "org.freedesktop.systemd1.Path",
    "automount": "org.freedesktop.systemd1.Automount",
    "scope": "org.freedesktop.systemd1.Scope",
}

# si_code of a dead process, as systemd reports it in ExecMainCode and Exec*= entries.
_CODES = {1: "exited", 2: "killed", 3: "dumped", 4: "trapped", 5: "stopped", 6: "continued"}

# Exit statuses with a name (LSB's and systemd's own, from systemd's exit-status table).
_STATUS_NAMES = {
    0: "SUCCESS", 1: "FAILURE", 2: "INVALIDARGUMENT", 3: "NOTIMPLEMENTED", 4: "NOPERMISSION",
    5: "NOTINSTALLED", 6: "NOTCONFIGURED", 7: "NOTRUNNING",
    200: "CHDIR", 201: "NICE", 202: "FDS", 203: "EXEC", 204: "MEMORY", 205: "LIMITS",
    206: "OOM_ADJUST", 207: "SIGNAL_MASK", 208: "STDIN", 209: "STDOUT", 210: "CHROOT",
    211: "IOPRIO", 212: "TIMERSLACK", 213: "SECUREBITS", 214: "SETSCHEDULER",
    215: "CPUAFFINITY", 216: "GROUP", 217: "USER", 218: "CAPABILITIES", 219: "CGROUP",
    220: "SETSID", 221: "CONFIRM", 222: "STDERR", 224: "PAM", 225: "NETWORK", 226: "NAMESPACE",
    227: "NO_NEW_PRIVILEGES", 228: "SECCOMP", 229: "SELINUX_CONTEXT", 230: "PERSONALITY",
    231: "APPARMOR", 232: "ADDRESS_FAMILIES", 233: "RUNTIME_DIRECTORY", 235: "CHOWN",
    236: "SMACK_PROCESS_LABEL", 237: "KEYRING", 238: "STATE_DIRECTORY",
    239: "CACHE_DIRECTORY", 240: "LOGS_DIRECTORY", 241: "CONFIGURATION_DIRECTORY",
    242: "NUMA_POLICY", 243: "CREDENTIALS", 245: "BPF",
}  # fmt: skip

# The command lists of a service, in the order systemd runs them.
_EXEC_PROPS = ("ExecCondition", "ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload",
               "ExecStop", "ExecStopPost")  # fmt: skip


def exit_status_text(code: int, status: int) -> str:
    """`code=exited, status=203/EXEC` or `code=killed, status=9/KILL`, as systemctl prints."""
    kind = _CODES.get(code, str(code))
    if kind == "exited":
        name = _STATUS_NAMES.get(status)
    else:
        try:
            name = signal.Signals(status).name.removeprefix("SIG")
        except ValueError:
            name = None
    return f"code={kind}, status={status}" + (f"/{name}" if name else "")


def _failed(code: int, status: int) -> bool:
    return code != 0 and not (_CODES.get(code) == "exited" and status == 0)


def failed_process(props: Mapping[str, Any]) -> str:
    """The first command of the service that failed and was not allowed to (`-` prefix), with
    its exit; else the main process's exit; "" when no process failed (a timeout, a
    dependency, a start limit: `Result=` says it)."""
    for prop in _EXEC_PROPS:
        for entry in props.get(prop) or ():
            # (path, argv, ignore_failure, start_rt, start_mono, exit_rt, exit_mono, pid, code,
            #  status)
            if len(entry) < 10 or entry[2]:
                continue
            path, argv, code, status = entry[0], entry[1], int(entry[8]), int(entry[9])
            if _failed(code, status):
                command = " ".join(argv) if argv else path
                return f"{prop}={command} ({exit_status_text(code, status)})"
    code, status = int(props.get("ExecMainCode") or 0), int(props.get("ExecMainStatus") or 0)
    if _failed(code, status):
        return f"main process ({exit_status_text(code, status)})"
    return ""
