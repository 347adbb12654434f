"""The fleetd daemon: one asyncio process running the agent, the engine and the API.

Signals: SIGTERM/SIGINT stop gracefully — units keep running (fleet stopped every local unit
on shutdown, a long-standing complaint of its users) and the machine's lease is left to run out,
so a restart within agent_ttl re-attaches and nothing moves; with `leave_on_shutdown` the
machine leaves instead (its units stop and move at once). SIGUSR2 (`fleetd leave`) leaves and
stops. SIGHUP re-reads the configuration without dropping the API listeners: the options that
can change safely take effect at once (`fleetd.config.reload_config`; the machine's metadata
and reservations are registered again, the TLS files re-read), the others wait for a restart,
and one event says which were which (docs/configuration.md, "Reloading").
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import grp
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from fleetd import __version__, logs
from fleetd.agent import Agent
from fleetd.api.server import APIServer, TLSFiles
from fleetd.config import Config, ConfigError, load_config, reload_config
from fleetd.engine import Engine
from fleetd.errors import PermanentError
from fleetd.exposure import warn_if_etcd_insecure
from fleetd.facts import KEYS as FACT_KEYS
from fleetd.facts import measure
from fleetd.model import Machine
from fleetd.reconcile.scheduler import Strategy
from fleetd.registry import EtcdConfig, EtcdUnavailable, Registry, with_facts
from fleetd.rules.resources import host_policy
from fleetd.sd_notify import Notifier
from fleetd.systemd import SystemdConfig, SystemdManager

__all__ = ["Daemon", "StartupError", "machine_id_of", "machine_of", "public_ip_of", "run"]

log = structlog.get_logger(__name__)

PID_FILE = "fleetd.pid"


class StartupError(PermanentError):
    """fleetd cannot start with this configuration or on this machine."""


def machine_id_of(config: Config) -> str:
    if config.machine_id:
        machine_id = config.machine_id
    else:
        try:
            machine_id = Path(config.machine_id_file).read_text().strip()
        except OSError as err:
            raise StartupError(
                f"cannot read the machine ID from {config.machine_id_file}: {err.strerror}"
            ) from None
    if len(machine_id) != 32 or any(c not in "0123456789abcdef" for c in machine_id):
        raise StartupError(f"machine ID {machine_id!r} is not 32 lower-case hex digits")
    return machine_id


def public_ip_of(config: Config) -> str:
    """The configured public IP, else the IPv4 address of the default route's interface."""
    if config.public_ip:
        return config.public_ip
    try:
        with open("/proc/net/route") as routes:
            iface = next(
                (cols[0] for cols in (line.split() for line in routes) if cols[1] == "00000000"),
                None,
            )
        if iface is None:
            return ""
        out = subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "dev", iface],
            capture_output=True,
            text=True,
            check=False,
            timeout=5,
        ).stdout
    except (OSError, subprocess.SubprocessError, IndexError):
        return ""
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            return parts[parts.index("inet") + 1].split("/")[0]
    return ""


def machine_of(config: Config, facts: Mapping[str, str]) -> Machine:
    """The machine this fleetd registers: its ID, public IP, and its configured metadata with
    the facts measured at start (`fleet.*` keys, docs/units.md)."""
    policy = host_policy(config.reserved_memory, config.reserved_cpu, config.overcommit)
    return Machine(
        machine_id_of(config),
        public_ip_of(config),
        with_facts(config.metadata, {**facts, **policy}),
        __version__,
    )


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        return host.strip("[]") or "0.0.0.0", int(port)
    except ValueError:
        raise StartupError(f"api_listen: {text!r} is not host:port") from None


def _socket_group(name: str) -> str | None:
    """api_socket_group as a numeric gid, checked before anything starts."""
    if not name or name.isdigit():
        return name or None
    try:
        return str(grp.getgrnam(name).gr_gid)
    except KeyError:
        raise StartupError(f"api_socket_group: no group named {name!r}") from None


def _prepare_runtime_dir(config: Config) -> Path:
    runtime = Path(config.runtime_dir)
    runtime.mkdir(parents=True, exist_ok=True)
    (runtime / PID_FILE).write_text(f"{os.getpid()}\n")
    return runtime


def etcd_config_of(config: Config) -> EtcdConfig:
    try:
        return EtcdConfig(
            endpoints=list(config.etcd_servers),
            ca_file=Path(config.etcd_cafile) if config.etcd_cafile else None,
            cert_file=Path(config.etcd_certfile) if config.etcd_certfile else None,
            key_file=Path(config.etcd_keyfile) if config.etcd_keyfile else None,
            username=config.etcd_username or None,
            password=config.etcd_password or None,
            request_timeout=config.etcd_request_timeout,
            key_prefix=config.etcd_key_prefix,
        )
    except ValueError as err:
        raise StartupError(f"etcd configuration: {err}") from None


def systemd_config_of(config: Config) -> SystemdConfig:
    return SystemdConfig(
        bus_address=config.dbus_address or None,
        units_dir=Path(config.units_directory),
        # systemctl/journalctl run as for the system manager unless systemd_user is set: inside a
        # sandbox machine /run/systemd/private leads them to that machine's manager, and the
        # status text then carries the unit's journal lines, as fleet's did.
        user=config.systemd_user,
    )


@dataclass
class Daemon:
    """Everything one fleetd runs, started and stopped in order."""

    config: Config
    config_path: str | None = None
    flags: Mapping[str, str] = field(default_factory=dict)
    registry: Registry | None = None
    systemd: SystemdManager | None = None
    agent: Agent | None = None
    engine: Engine | None = None
    api: APIServer | None = None
    notifier: Notifier = field(default_factory=Notifier)  # systemd's Type=notify (sd_notify.py)
    serving: bool = False  # READY=1 was sent: the API listens and the machine is registered
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    leave_requested: bool = False
    tls: ServerTLS | None = None  # the TCP API's and the peer listener's, renewed by SIGHUP
    _reloading: asyncio.Lock = field(default_factory=asyncio.Lock)  # one SIGHUP at a time
    _reloads: set[asyncio.Task[None]] = field(default_factory=set)

    async def run(self) -> None:
        config = self.config
        facts = measure(config.units_directory)
        machine = machine_of(config, facts)
        socket_group = _socket_group(config.api_socket_group)
        for name in config.ignored:
            log.warning("config.option_ignored", option=name, reason="deprecated in fleet 1.0")
        for variable in config.unknown_variables:
            log.warning(
                "config.unknown_variable", variable=variable, reason="names no fleetd option"
            )
        runtime = _prepare_runtime_dir(config)
        log.info(
            "fleetd.starting",
            version=__version__,
            machine=machine.id,
            ip=machine.public_ip,
            metadata=dict(config.metadata),
            etcd=list(config.etcd_servers),
        )
        log.info(
            "fleetd.machine_measured",
            machine=machine.id,
            facts=facts,
            unmeasured=[key for key in FACT_KEYS if key not in facts],
        )
        self.notifier.status(f"connecting to etcd ({', '.join(config.etcd_servers)})")
        self.registry = Registry(etcd_config_of(config))
        await self.registry.connect()
        self.notifier.status("connecting to systemd, adopting the units it runs")
        self.systemd = SystemdManager(systemd_config_of(config))
        await self.systemd.start()
        self.agent = Agent(
            self.registry,
            self.systemd,
            machine,
            ttl=config.agent_lease,
            runtime_dir=runtime,
            fence_on_lease_loss=config.fence_on_lease_loss,
        )
        tls = TLSFiles(config.api_tls_cert, config.api_tls_key, config.api_tls_ca)
        if config.api_listen or config.peer_port:
            self.tls = _server_tls(tls)
        self.api = APIServer(
            self.registry,
            machine.id,
            inspector=self.systemd,
            peer_url=self._peer_url,
            peer_ssl=_peer_client_context(tls) if config.peer_port else None,
            token_limit=config.token_limit,
            version=__version__,
        )
        await self.api.start(
            config.api_socket,
            socket_group=socket_group,
            tcp=_host_port(config.api_listen) if config.api_listen else None,
            tls=self.tls.front if config.api_listen and self.tls else None,
            peer=(machine.public_ip or "127.0.0.1", config.peer_port) if config.peer_port else None,
            peer_tls=self.tls.front if config.peer_port and self.tls else None,
        )
        tasks: dict[str, asyncio.Task[None]] = {
            "agent": asyncio.create_task(self.agent.run(), name="agent"),
        }
        if not config.disable_engine:
            self.engine = Engine(
                self.registry,
                machine.id,
                version=__version__,
                lease_ttl=config.engine_lease,
                lease_file=runtime / "engine-lease",
                strategy=Strategy(config.scheduler),
                on_leadership=self._leadership_changed,
            )
            tasks["engine"] = asyncio.create_task(self.engine.run(), name="engine")
        self._install_signals()
        stop = asyncio.create_task(self.stopping.wait())
        tasks["ready"] = asyncio.create_task(self._notify_ready(machine), name="sd-ready")
        try:
            done, _ = await asyncio.wait(
                [*tasks.values(), stop], return_when=asyncio.FIRST_COMPLETED
            )
            for name, task in tasks.items():
                if task in done and not task.cancelled() and task.exception() is not None:
                    err = task.exception()
                    log.error("fleetd.component_died", component=name, error=str(err))
                    raise err  # type: ignore[misc]
        finally:
            await self._shutdown(tasks, stop)

    async def _shutdown(self, tasks: dict[str, asyncio.Task[None]], stop: asyncio.Task) -> None:
        leave = self.leave_requested or self.config.leave_on_shutdown
        log.info("fleetd.stopping", leave=leave)
        self.notifier.stopping(
            "leaving the cluster: stopping this machine's units"
            if leave
            else "stopping (units keep running)"
        )
        stop.cancel()
        if self.api is not None:
            await self.api.stop()
        if self.engine is not None:
            await self.engine.resign()
        if self.agent is not None and (self.leave_requested or self.config.leave_on_shutdown):
            await self.agent.leave()
        for name in ("ready", "engine", "agent"):  # reverse order of start
            task = tasks.get(name)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.systemd is not None:
            await self.systemd.close()
        if self.registry is not None:
            await self.registry.close()
        with contextlib.suppress(OSError):
            (Path(self.config.runtime_dir) / PID_FILE).unlink()
        log.info("fleetd.stopped")

    async def _notify_ready(self, machine: Machine) -> None:
        """READY=1 to systemd once the machine is registered (the API listens already), so
        `systemctl start fleet` returns when fleetd serves; then wait for the stop."""
        assert self.agent is not None
        self.notifier.status(f"registering machine {machine.id} in etcd")
        await self.agent.registered.wait()
        self.serving = True
        self.notifier.ready(self._serving_status())
        log.info("fleetd.ready", machine=machine.id, notified=self.notifier.address is not None)
        await self.stopping.wait()

    def _serving_status(self) -> str:
        """What `systemctl status fleet` says while fleetd serves."""
        if self.engine is None:
            engine = "engine disabled"
        else:
            engine = "engine leader" if self.engine.is_leader.is_set() else "engine standby"
        assert self.agent is not None
        return f"serving: machine {self.agent.machine.id[:8]} registered, {engine}"

    def _leadership_changed(self, leading: bool) -> None:
        if self.serving and not self.stopping.is_set():
            self.notifier.status(self._serving_status())

    def _peer_url(self, machine_id: str, public_ip: str) -> str | None:
        """Where another machine's fleetd serves status and journal of its units (its public
        IP as the registry has it: the agent follows no other machine)."""
        if not public_ip or not self.config.peer_port:
            return None
        return f"https://{public_ip}:{self.config.peer_port}"

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGUSR2, self._leave)
        loop.add_signal_handler(signal.SIGHUP, self._reload)

    def _leave(self) -> None:
        log.info("fleetd.leave_requested")
        self.leave_requested = True
        self.stopping.set()

    def _reload(self) -> None:
        """SIGHUP: reload in a task of the daemon's (registering the machine again awaits
        etcd); reloads run one after the other."""
        task = asyncio.get_running_loop().create_task(self._reload_configuration(), name="reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloaded)

    def _reloaded(self, task: asyncio.Task[None]) -> None:
        self._reloads.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("fleetd.reload_crashed", error=repr(task.exception()))

    async def _reload_configuration(self) -> None:
        async with self._reloading:
            log.info("fleetd.reloading_configuration", path=self.config_path)
            try:
                new = load_config(self.config_path, os.environ, self.flags)
            except ConfigError as err:
                log.error(
                    "fleetd.reload_failed",
                    error=str(err),
                    action="keeping the running configuration",
                )
                return
            running = self.config
            reloaded = reload_config(running, new)
            self.config = reloaded.config  # leave_on_shutdown is read from it when stopping
            applied, failed = list(reloaded.applied), {}
            if "verbosity" in applied:
                logs.configure(self.config.verbosity)
            if self.engine is not None:
                self.engine.strategy = Strategy(self.config.scheduler)
            if self.api is not None:
                self.api.ctx.token_limit = self.config.token_limit
            tls = self._reload_tls()
            if tls not in ("re-read", "no TLS listener"):
                failed = {name: tls for name in _TLS_OPTIONS if name in applied}
                applied = [name for name in applied if name not in failed]
                self.config = self.config.with_values(
                    **{name: getattr(running, name) for name in _TLS_OPTIONS}
                )
            machine = await self._reload_machine(applied)
            log.info(
                "fleetd.configuration_reloaded",
                path=self.config_path,
                applied=applied,
                needs_restart=list(reloaded.restart),
                failed=failed,
                machine=machine,
                tls=tls,
            )

    def _reload_tls(self) -> str:
        """Read the TLS files again (also unchanged names: a certificate renewed in place) for
        the listeners that run and for forwarding to peers; on an error the running ones stay."""
        if self.tls is None:
            return "no TLS listener"
        config = self.config
        files = TLSFiles(config.api_tls_cert, config.api_tls_key, config.api_tls_ca)
        try:
            self.tls.reload(files)
            if config.peer_port and self.api is not None:
                self.api.peers.peer_ssl = files.client_context()
        except (OSError, ssl.SSLError) as err:
            log.error(
                "fleetd.tls_reload_failed",
                error=str(err),
                action="keeping the running certificates",
            )
            return f"not re-read: {err}"
        return "re-read"

    async def _reload_machine(self, applied: list[str]) -> str:
        """Register this machine's document again when its metadata or reservations changed."""
        if self.agent is None or not set(applied) & _MACHINE_OPTIONS:
            return "unchanged"
        config, current = self.config, self.agent.machine
        facts = {k: v for k, v in current.metadata.items() if k in FACT_KEYS}  # as measured
        policy = host_policy(config.reserved_memory, config.reserved_cpu, config.overcommit)
        machine = dataclasses.replace(
            current, metadata=with_facts(config.metadata, {**facts, **policy})
        )
        try:
            written = await self.agent.update_machine(machine)
        except EtcdUnavailable as err:
            log.warning("fleetd.machine_not_updated", machine=machine.id, error=str(err))
            written = False
        return "registered again" if written else "at the next registration"


_TLS_OPTIONS = ("api_tls_cert", "api_tls_key", "api_tls_ca")
# the options this machine's registered document is made of (besides its ID and IP)
_MACHINE_OPTIONS = {"metadata", "reserved_memory", "reserved_cpu", "overcommit"}


class ServerTLS:
    """The TLS of the TCP API and the peer listener, renewable by SIGHUP. The listeners are
    opened with `front`, whose SNI callback (run on every ClientHello, with or without a server
    name) hands the handshake to the context of the files as last read: a new certificate, key
    or CA serves new connections at once; open connections keep theirs."""

    def __init__(self, files: TLSFiles) -> None:
        self.current = files.server_context()
        self.front = files.server_context()
        self.front.sni_callback = self._pick

    def _pick(self, connection: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        connection.context = self.current

    def reload(self, files: TLSFiles) -> None:
        """Read the files again; raises OSError or ssl.SSLError and keeps the running ones."""
        self.current = files.server_context()


def _server_tls(files: TLSFiles) -> ServerTLS:
    """The listeners' TLS; files that cannot be loaded stop fleetd with one line naming the
    three options."""
    try:
        return ServerTLS(files)
    except (OSError, ssl.SSLError) as err:
        raise PermanentError(
            f"cannot load the API's TLS files (api_tls_cert={files.cert}, "
            f"api_tls_key={files.key}, api_tls_ca={files.ca}): {err}"
        ) from None


def _peer_client_context(tls: TLSFiles) -> ssl.SSLContext:
    """The TLS side a forwarding fleetd shows other machines' peer listeners; a file that
    cannot be loaded stops fleetd with one line naming the three options."""
    try:
        return tls.client_context()
    except (OSError, ssl.SSLError) as err:
        raise PermanentError(
            f"cannot load the peer listener's TLS files (api_tls_cert={tls.cert}, "
            f"api_tls_key={tls.key}, api_tls_ca={tls.ca}): {err}"
        ) from None


def run(config_path: str | None, flags: Mapping[str, str]) -> int:
    """Entry point of `fleetd`: load the configuration and run until stopped. Returns the exit
    code (2 for a configuration or start-up error, reported in one clear line, which is also
    the STATUS= `systemctl status fleet` shows)."""
    notifier = Notifier.from_environment(os.environ)
    try:
        config = load_config(config_path, os.environ, flags)
    except ConfigError as err:
        print(f"fleetd: configuration error: {err}", file=sys.stderr)
        notifier.status(f"configuration error: {err}")
        return 2
    logs.configure(config.verbosity)
    warn_if_etcd_insecure(config)
    import uvloop

    daemon = Daemon(config, config_path, dict(flags), notifier=notifier)
    try:
        uvloop.run(notifier.with_watchdog(daemon.run()))
    except PermanentError as err:
        log.error("fleetd.cannot_start", error=str(err))
        notifier.status(f"cannot start: {err}")
        return 2
    finally:
        notifier.close()
    return 0
