"""Local unit files as fleetctl finds them: names, symlinks, templates, --replace rules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleetd.cli.files import (
    BadFile,
    NotFound,
    find_local,
    local_counterpart,
    local_path,
    replace_allowed,
)
from fleetd.unit import parse_unit

SEED = Path(__file__).parents[2] / "examples" / "seed"


@pytest.fixture
def walkthrough(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The walkthrough's layout: templates/, instances/ (symlinks), static/, a link at the top."""
    for d in ("templates", "instances", "static"):
        (tmp_path / d).mkdir()
    (tmp_path / "templates" / "apache@.service").write_text((SEED / "apache@.service").read_text())
    (tmp_path / "static" / "hello.service").write_text((SEED / "hello.service").read_text())
    for port in (5555, 6666, 7777):
        os.symlink(
            "../templates/apache@.service", tmp_path / "instances" / f"apache@{port}.service"
        )
    os.symlink("templates/apache@.service", tmp_path / "apache@8888.service")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("arg", "path"),
    [
        ("hello", "hello.service"),  # `hello` means hello.service
        ("static/hello", "static/hello.service"),
        ("hello.service", "hello.service"),
        ("foo.target", "foo.target"),  # targets are units too (fleet made foo.target.service)
        ("foo.socket", "foo.socket"),
    ],
)
def test_local_path(arg: str, path: str) -> None:
    assert local_path(arg) == path


def test_symlink_gives_content_of_target_and_name_of_link(walkthrough: Path) -> None:
    found = find_local("apache@8888.service")
    assert found.name == "apache@8888.service"
    assert found.unit == parse_unit((SEED / "apache@.service").read_text())
    assert not found.from_template


def test_instances_through_a_glob_of_symlinks(walkthrough: Path) -> None:
    names = [find_local(str(p)).name for p in sorted((walkthrough / "instances").iterdir())]
    assert names == ["apache@5555.service", "apache@6666.service", "apache@7777.service"]


def test_short_name_in_a_directory(walkthrough: Path) -> None:
    found = find_local("static/hello")
    assert (found.name, found.path) == ("hello.service", "static/hello.service")


def test_instance_from_registry_template_before_template_file(walkthrough: Path) -> None:
    registry_template = parse_unit("[Service]\nExecStart=/bin/true\n")
    found = find_local("templates/apache@80.service", registry_template=registry_template)
    assert found.unit is registry_template and found.from_template


def test_instance_from_template_file_in_same_directory(walkthrough: Path) -> None:
    found = find_local("templates/apache@80.service")
    assert found.name == "apache@80.service"
    assert found.path == "templates/apache@.service" and found.from_template


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        # fleet's message, then the path looked at
        ("nosuch.service", "unable to find Unit(nosuch.service) in Registry or on filesystem (looked for file {d}/nosuch.service)"),
        ("nosuch", "unable to find Unit(nosuch.service) in Registry or on filesystem (looked for file {d}/nosuch.service)"),
        # the template is looked for next to the argument only, not elsewhere
        ("apache@80.service", "unable to find template Unit(apache@.service) in Registry or on filesystem (looked for file {d}/apache@80.service, looked for file {d}/apache@.service)"),
        # a suffix that is no unit type: said instead of "not found"
        ("hello.srvice", "hello.srvice has no valid unit suffix (.automount, .busname, .device, .mount, .path, .scope, .service, .slice, .snapshot, .socket, .swap, .target, .timer)"),
        # an instance may hold dots: its template is looked for, as fleet does
        ("etcd@10.0.0.1", "unable to find template Unit(etcd@.service) in Registry or on filesystem (looked for file {d}/etcd@10.0.0.1.service, looked for file {d}/etcd@.service)"),
    ],
)  # fmt: skip
def test_not_found_messages(walkthrough: Path, arg: str, message: str) -> None:
    with pytest.raises(NotFound) as err:
        find_local(arg)
    assert str(err.value) == message.replace("{d}", os.getcwd())


def test_an_instance_with_dots_comes_from_its_template(walkthrough: Path) -> None:
    found = find_local("templates/apache@10.0.0.1")
    assert (found.name, found.path) == ("apache@10.0.0.1.service", "templates/apache@.service")


def test_unreadable_unit_file_is_an_error(walkthrough: Path) -> None:
    (walkthrough / "bad.service").write_text("[Unit\n")
    with pytest.raises(BadFile) as err:
        find_local("bad.service")
    assert str(err.value) == f"{walkthrough}/bad.service: line 1: unable to find end of section"


def test_local_counterpart_is_file_then_template(walkthrough: Path) -> None:
    path, _ = local_counterpart("static/hello") or ("", None)
    assert path == "static/hello.service"
    path, _ = local_counterpart("templates/apache@1.service") or ("", None)
    assert path == "templates/apache@.service"
    assert local_counterpart("nosuch.service") is None


@pytest.mark.parametrize(
    ("command", "desired", "allowed"),
    [
        # fleet's checkReplaceUnitState table
        ("submit", "inactive", True),
        ("submit", "loaded", False),
        ("submit", "launched", False),
        ("load", "inactive", True),
        ("load", "loaded", True),
        ("load", "launched", False),
        ("start", "inactive", True),
        ("start", "loaded", True),
        ("start", "launched", True),
        ("stop", "launched", False),  # only submit/load/start replace
    ],
)
def test_replace_decision_table(command: str, desired: str, allowed: bool) -> None:
    assert replace_allowed(command, desired) is allowed
