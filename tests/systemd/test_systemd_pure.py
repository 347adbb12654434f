"""Parts of the systemd adapter that need no systemd: the units dir, object paths, bus errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetd.errors import PermanentError, TemporaryError
from fleetd.systemd import BadUnitName, BusUnavailable, SystemdConfig, SystemdManager, UnitDir
from fleetd.systemd.dbus import Properties, unit_name_of_path, unit_path
from fleetd.unit import parse_unit


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("hello.service", "/org/freedesktop/systemd1/unit/hello_2eservice"),
        ("apache@80.service", "/org/freedesktop/systemd1/unit/apache_4080_2eservice"),
        ("a-b_c.service", "/org/freedesktop/systemd1/unit/a_2db_5fc_2eservice"),
    ],
    ids=["plain", "instance", "dash-and-underscore"],
)
def test_unit_object_paths_escape_as_systemd_does(name: str, path: str) -> None:
    assert unit_path(name) == path
    assert unit_name_of_path(path) == name


def test_unit_dir_writes_atomically_and_lists_only_unit_files(tmp_path: Path) -> None:
    units = UnitDir(tmp_path / "units")
    unit = parse_unit("[Service]\nExecStart=/bin/true\n")
    path = units.write("a.service", unit)
    assert path == tmp_path / "units" / "a.service"
    assert path.read_text() == unit.serialize()
    (tmp_path / "units" / ".a.service.tmp123").write_text("half")  # a writer's temp file
    (tmp_path / "units" / "README").write_text("not a unit")
    units.write("b@.service", "[Service]\nExecStart=/bin/true\n")
    assert units.names() == ["a.service", "b@.service"]
    units.write("a.service", "[Service]\nExecStart=/bin/false\n")  # replace
    assert units.read("a.service") == "[Service]\nExecStart=/bin/false\n"
    assert units.remove("a.service") and not units.remove("a.service")
    assert units.names() == ["b@.service"]


@pytest.mark.parametrize(
    "name",
    ["../x.service", "/etc/x.service", "a/../../x.service", ".x.service", "", "x", "x.exe"],
)
def test_unit_dir_refuses_names_that_are_not_plain_unit_names(tmp_path: Path, name: str) -> None:
    units = UnitDir(tmp_path / "units")
    with pytest.raises(BadUnitName) as err:
        units.write(name, "[Service]\n")
    assert isinstance(err.value, PermanentError)
    assert not any(tmp_path.rglob("*.service"))


async def test_an_unreachable_bus_is_a_temporary_error(tmp_path: Path) -> None:
    manager = SystemdManager(
        SystemdConfig(bus_address=f"unix:path={tmp_path}/nobus", units_dir=tmp_path)
    )
    with pytest.raises(BusUnavailable) as err:
        await manager.start()
    assert isinstance(err.value, TemporaryError)


def test_bus_selection() -> None:
    assert SystemdConfig().bus_address is None  # the system bus
    assert not SystemdConfig().user_manager
    assert SystemdConfig(bus_address="unix:path=/x/bus").user_manager
    assert SystemdConfig().units_dir == Path("/run/fleet/units")


def test_signal_properties_are_plain_values_when_read() -> None:
    """A signal's changed properties stay as dbus-fast decoded them until one is read (most
    are never: the agent reads three), then come as plain values, nested ones too."""
    from dbus_fast.signature import Variant

    raw = {
        "ActiveState": Variant("s", "active"),
        "Conditions": Variant("a(sbbsi)", [["ConditionPathExists", False, False, "/x", 0]]),
        "Job": Variant("(uo)", [0, "/"]),
    }
    props = Properties(raw)
    assert len(props) == 3 and list(props) == ["ActiveState", "Conditions", "Job"]
    assert props["ActiveState"] == "active" and props.get("SubState", "none") == "none"
    assert props["Conditions"] == [["ConditionPathExists", False, False, "/x", 0]]
    assert dict(props) == {
        "ActiveState": "active",
        "Conditions": [["ConditionPathExists", False, False, "/x", 0]],
        "Job": [0, "/"],
    }
