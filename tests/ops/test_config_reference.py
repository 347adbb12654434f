"""docs/configuration.md against the code: every field of `Config` has a row in the reference,
with its real default, its `FLEET_*` variable, a flag `fleetd` accepts and what SIGHUP does
with it (`Option.on_reload`) — and the page documents no option that does not exist. (tests/unit/test_config.py checks names and variables;
this also checks the defaults and flags a reader copies from the page.)"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from fleetd.config import OPTIONS, Config, OnReload, build_config
from fleetd.main import fleetd

DOC = Path(__file__).parents[2] / "docs" / "configuration.md"
# derived: which deprecated options were given, which FLEET_* variables name no option
NOT_OPTIONS = {"ignored", "unknown_variables"}
_ROW = re.compile(
    r"^\| `([a-z_]+)` \| `([^`]*)` \| `([A-Z_]+)` \| `(--[a-z-]+)` \| (.+) \| ([a-z]+) \|$"
)


def rows() -> dict[str, tuple[str, str, str, str]]:
    found: dict[str, tuple[str, str, str, str]] = {}
    for line in DOC.read_text().splitlines():
        if (m := _ROW.match(line)) is not None:
            name, default, env, flag, _meaning, on_reload = m.groups()
            assert name not in found, f"{name} documented twice"
            found[name] = (default, env, flag, on_reload)
    return found


FIELDS = [f.name for f in dataclasses.fields(Config) if f.name not in NOT_OPTIONS]


def test_the_reference_documents_exactly_the_options() -> None:
    assert set(rows()) == set(FIELDS) == {o.name for o in OPTIONS}


@pytest.mark.parametrize("name", FIELDS)
def test_row_gives_the_real_default_variable_and_flag(name: str) -> None:
    default, env, flag, _ = rows()[name]
    assert env == f"FLEET_{name.upper()}"
    assert flag == "--" + name.replace("_", "-")
    assert flag in {opt for param in fleetd.params for opt in param.opts}
    actual = getattr(Config(), name)
    if default == "(empty)":
        assert not actual, f"{name}: documented empty, default is {actual!r}"
    else:  # the documented default, read as fleetd reads the option, is the default
        documented = getattr(build_config(flags={name: default}), name)
        assert documented == actual, f"{name}: documented {default!r}, default is {actual!r}"


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_row_says_what_sighup_does(option) -> None:  # type: ignore[no-untyped-def]
    assert OnReload(rows()[option.name][3]) is option.on_reload
