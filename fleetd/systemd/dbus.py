"""The one module that imports dbus-fast: a connection to systemd's manager and its signals.

`SystemdBus` is a thin, typed shell around one `dbus_fast.aio.MessageBus`: low-level method calls
on `org.freedesktop.systemd1.Manager` (no introspection round-trip), D-Bus errors translated into
ours, and the two signals the adapter needs decoded into plain events (`JobRemoved`,
`UnitChanged`). `wait_for_name` waits for a bus name to appear (NameOwnerChanged, with a deadline).
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.signature import Variant

from fleetd.errors import PermanentError, TemporaryError

log = structlog.get_logger(__name__)

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER_IFACE = "org.freedesktop.systemd1.Manager"
UNIT_IFACE = "org.freedesktop.systemd1.Unit"
SERVICE_IFACE = "org.freedesktop.systemd1.Service"
PROPS_IFACE = "org.freedesktop.DBus.Properties"
UNIT_PATH_PREFIX = "/org/freedesktop/systemd1/unit/"
DBUS_NAME = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"

# D-Bus errors that mean "this unit cannot be loaded": the caller sees them as a load state.
LOAD_ERRORS = frozenset(
    {
        "org.freedesktop.systemd1.LoadFailed",
        "org.freedesktop.systemd1.NoSuchUnit",
        "org.freedesktop.systemd1.BadUnitSetting",
        "org.freedesktop.systemd1.UnitMasked",
        "org.freedesktop.systemd1.UnitGenerated",
        "org.freedesktop.systemd1.UnitLinked",
    }
)


class SystemdError(PermanentError):
    """systemd refused a request (a D-Bus error reply)."""

    def __init__(self, method: str, name: str, text: str) -> None:
        super().__init__(f"{method}: {name}: {text}")
        self.method = method
        self.name = name
        self.text = text

    @property
    def is_load_error(self) -> bool:
        return self.name in LOAD_ERRORS


# dbus-fast (as dbus-next before it: altdesktop/python-dbus-next#153) drops the connection when
# a send finds the socket's buffer full (EAGAIN) instead of waiting for it to drain; 1,000
# Start/StopUnit calls sent at once filled it (`make bench`). At most this many calls are in
# flight: a few tens of kilobytes queued at worst, far below a unix socket's buffer, and still
# enough to keep systemd, which answers one call at a time, always busy.
MAX_CALLS_IN_FLIGHT = 16


class BusUnavailable(TemporaryError):
    """The bus cannot be reached or the connection dropped."""


@dataclass(frozen=True, slots=True)
class JobRemoved:
    job: str  # the job's object path
    unit: str
    result: str  # done, canceled, timeout, failed, dependency, skipped


class Properties(Mapping[str, Any]):
    """A signal's changed properties, each made a plain value when it is read: a unit's
    signal carries ~25 properties, and each new unit makes systemd signal those of the units
    it depends on too (basic.target, shutdown.target, its slice), while the agent reads three
    properties, of its own units only."""

    __slots__ = ("_raw",)

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self._raw = raw

    def __getitem__(self, key: str) -> Any:
        return _deep_plain(self._raw[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


@dataclass(frozen=True, slots=True)
class UnitChanged:
    unit: str
    changed: Mapping[str, Any]  # property -> plain value (`Properties`: decoded when read)
    invalidated: tuple[str, ...]


Signal = JobRemoved | UnitChanged

_ESCAPED = re.compile(r"_([0-9a-f]{2})")


def unit_path(name: str) -> str:
    """systemd's object path of a unit: every byte but [A-Za-z0-9] becomes _xx."""
    return UNIT_PATH_PREFIX + "".join(
        c if c.isascii() and c.isalnum() else "".join(f"_{b:02x}" for b in c.encode()) for c in name
    )


@functools.lru_cache(maxsize=4096)  # every signal of a unit names its path again
def unit_name_of_path(path: str) -> str | None:
    if not path.startswith(UNIT_PATH_PREFIX):
        return None
    label = path[len(UNIT_PATH_PREFIX) :]
    raw = _ESCAPED.sub(lambda m: "\\x" + m.group(1), label)
    return (
        raw.encode("latin-1").decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")
    )


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Variant) else value


class SystemdBus:
    """One connection to a systemd manager (system bus, or any `unix:path=...` address)."""

    def __init__(self, bus: MessageBus, address: str | None) -> None:
        self._bus = bus
        self.address = address
        self._in_flight = asyncio.Semaphore(MAX_CALLS_IN_FLIGHT)
        self._handlers: list[Callable[[Signal], None]] = []
        bus.add_message_handler(self._on_message)

    @classmethod
    async def connect(cls, address: str | None = None) -> SystemdBus:
        """Connect to `address`, or to the system bus when it is None."""
        try:
            if address is None:
                bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
            else:
                bus = await MessageBus(bus_address=address).connect()
        except (OSError, EOFError) as exc:
            raise BusUnavailable(f"cannot connect to {address or 'the system bus'}: {exc}") from exc
        except Exception as exc:  # dbus-fast raises its own auth/handshake errors
            raise BusUnavailable(f"cannot connect to {address or 'the system bus'}: {exc}") from exc
        return cls(bus, address)

    @property
    def connected(self) -> bool:
        return self._bus.connected

    def on_signal(self, handler: Callable[[Signal], None]) -> None:
        self._handlers.append(handler)

    async def wait_disconnected(self) -> None:
        """Return when the connection drops (for any reason, including our own disconnect())."""
        waiter = asyncio.ensure_future(self._bus.wait_for_disconnect())
        try:
            await asyncio.wait({waiter})  # returns however the waiter ends
        finally:
            if not waiter.done():
                waiter.cancel()
        if not waiter.cancelled():
            waiter.exception()  # retrieved; the drop's cause does not matter here

    def disconnect(self) -> None:
        self._bus.disconnect()

    async def call(
        self,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        *,
        path: str = MANAGER_PATH,
        interface: str = MANAGER_IFACE,
        destination: str = SYSTEMD,
        queued: bool = True,
    ) -> list[Any]:
        """Call `member` and return its reply's body. `queued` calls (a unit's start, stop,
        state...) wait for one of MAX_CALLS_IN_FLIGHT; a call a whole burst waits on (the
        link of a batch of files, a reload, the read after them: one at a time, under the
        reloads' lock) passes them, or the next wave's link waited behind hundreds of starts."""
        msg = Message(
            destination=destination,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=body or [],
        )
        try:
            if queued:
                async with self._in_flight:
                    reply = await self._bus.call(msg)
            else:
                reply = await self._bus.call(msg)
        except (OSError, EOFError, ConnectionError) as exc:
            raise BusUnavailable(f"{member}: {exc}") from exc
        except Exception as exc:  # dbus-fast signals a dropped connection with its own errors
            if not self._bus.connected:
                raise BusUnavailable(f"{member}: {exc}") from exc
            raise
        if reply is None:
            raise BusUnavailable(f"{member}: no reply")
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body else ""
            if reply.error_name in (
                "org.freedesktop.DBus.Error.NoReply",
                "org.freedesktop.DBus.Error.Disconnected",
                "org.freedesktop.DBus.Error.ServiceUnknown",
            ):
                raise BusUnavailable(f"{member}: {reply.error_name}: {text}")
            raise SystemdError(member, reply.error_name or "unknown", text)
        return [_deep_plain(v) for v in reply.body]

    async def add_match(self, rule: str) -> None:
        await self.call(
            "AddMatch", "s", [rule], path=DBUS_PATH, interface=DBUS_NAME, destination=DBUS_NAME
        )

    async def get_property(self, name: str, interface: str, prop: str) -> Any:
        (value,) = await self.call(
            "Get", "ss", [interface, prop], path=unit_path(name), interface=PROPS_IFACE
        )
        return value

    async def get_all(self, name: str, interface: str) -> dict[str, Any]:
        """Every property of `interface` on the unit `name` (one GetAll)."""
        (values,) = await self.call(
            "GetAll", "s", [interface], path=unit_path(name), interface=PROPS_IFACE
        )
        return dict(values)

    def _on_message(self, msg: Message) -> bool:
        if msg.message_type != MessageType.SIGNAL:
            return False
        event: Signal | None = None
        if msg.member == "JobRemoved" and msg.interface == MANAGER_IFACE:
            _id, job, unit, result = msg.body
            event = JobRemoved(job, unit, result)
        elif msg.member == "PropertiesChanged" and msg.interface == PROPS_IFACE:
            iface, changed, invalidated = msg.body
            unit = unit_name_of_path(msg.path or "")
            if unit is not None and iface == UNIT_IFACE:
                event = UnitChanged(unit, Properties(changed), tuple(invalidated))
        if event is not None:
            for handler in self._handlers:
                handler(event)
        return False


def _deep_plain(value: Any) -> Any:
    value = _plain(value)
    if isinstance(value, list):
        return [_deep_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _deep_plain(v) for k, v in value.items()}
    return value


async def set_log_target(address: str, target: str) -> None:
    """Point the manager at `address` to log to `target` ("journal", "console", ...): it opens
    its log again, so a manager started before its journald logs there from now on."""
    bus = await SystemdBus.connect(address)
    try:
        await bus.call(
            "Set",
            "ssv",
            [MANAGER_IFACE, "LogTarget", Variant("s", target)],
            interface=PROPS_IFACE,
        )
    finally:
        bus.disconnect()


async def wait_for_name(address: str, name: str, within: float) -> None:
    """Return once `name` has an owner on the bus at `address`; TemporaryError after `within` s.

    Subscribes to NameOwnerChanged for the name first, then asks NameHasOwner, so an owner that
    appears in between is not missed.
    """
    bus = await SystemdBus.connect(address)
    appeared = asyncio.get_running_loop().create_future()

    def on_message(msg: Message) -> bool:
        if (
            msg.message_type == MessageType.SIGNAL
            and msg.member == "NameOwnerChanged"
            and msg.body
            and msg.body[0] == name
            and msg.body[2]
            and not appeared.done()
        ):
            appeared.set_result(None)
        return False

    bus._bus.add_message_handler(on_message)
    try:
        await bus.add_match(
            f"type='signal',sender='{DBUS_NAME}',interface='{DBUS_NAME}',"
            f"member='NameOwnerChanged',arg0='{name}'"
        )
        (has_owner,) = await bus.call(
            "NameHasOwner",
            "s",
            [name],
            path=DBUS_PATH,
            interface=DBUS_NAME,
            destination=DBUS_NAME,
        )
        if not has_owner:
            try:
                await asyncio.wait_for(appeared, within)
            except TimeoutError as exc:
                raise TemporaryError(f"{name} did not appear on {address} in {within}s") from exc
    finally:
        bus.disconnect()
