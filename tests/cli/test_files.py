"""Local unit files as fleetctl finds them: names, symlinks, templates, on real directories.

The reader only says what is on disk; the plan (`fleetd.reconcile.submit`, its own table tests
in tests/reconcile) picks from it. Here both run on the walkthrough's layout, no cluster.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleetd.cli.files import local_path, read_arguments
from fleetd.reconcile.submit import plan_submit
from tests.seed import seed_text, seed_unit

APACHE = seed_unit("apache@.service")


def created(*args: str) -> list[tuple[str, str]]:
    """(unit name, file read) of each unit `fleetctl submit args` would create here."""
    arguments = {a.text: a for a in read_arguments(args)}
    plan = plan_submit("submit", list(arguments.values()), {})
    assert plan.refusal == ""
    paths = {}
    for text, arg in arguments.items():
        assert arg.local is not None
        paths[text] = arg.local.path
    return [(w.name, paths[text]) for w, text in zip(plan.writes, arguments, strict=True)]


@pytest.fixture
def walkthrough(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The walkthrough's layout: templates/, instances/ (symlinks), static/, a link at the top."""
    for d in ("templates", "instances", "static"):
        (tmp_path / d).mkdir()
    (tmp_path / "templates" / "apache@.service").write_text(seed_text("apache@.service"))
    (tmp_path / "static" / "hello.service").write_text(seed_text("hello.service"))
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
    [arg] = read_arguments(["apache@8888.service"])
    assert arg.local is not None and not arg.local.template
    assert arg.local.unit == APACHE
    assert created("apache@8888.service") == [("apache@8888.service", "apache@8888.service")]


def test_instances_through_a_glob_of_symlinks(walkthrough: Path) -> None:
    paths = [str(p) for p in sorted((walkthrough / "instances").iterdir())]
    assert [name for name, _ in created(*paths)] == [
        "apache@5555.service", "apache@6666.service", "apache@7777.service"
    ]  # fmt: skip


def test_short_name_in_a_directory(walkthrough: Path) -> None:
    assert created("static/hello") == [("hello.service", "static/hello.service")]


def test_instance_from_template_file_in_same_directory(walkthrough: Path) -> None:
    [arg] = read_arguments(["templates/apache@80.service"])
    assert arg.local is not None and arg.local.template
    assert created("templates/apache@80.service") == [
        ("apache@80.service", "templates/apache@.service")
    ]


def test_an_instance_with_dots_comes_from_its_template(walkthrough: Path) -> None:
    assert created("templates/apache@10.0.0.1") == [
        ("apache@10.0.0.1.service", "templates/apache@.service")
    ]


def test_a_template_is_read_once_for_many_instances(walkthrough: Path) -> None:
    args = read_arguments([f"templates/apache@{i}" for i in range(3)])
    assert args[0].local is args[1].local is args[2].local


@pytest.mark.parametrize(
    ("arg", "looked_at"),
    [
        ("nosuch.service", ["looked for file {d}/nosuch.service"]),
        ("nosuch", ["looked for file {d}/nosuch.service"]),
        # the template is looked for next to the argument only, not elsewhere
        ("apache@80.service", ["looked for file {d}/apache@80.service", "looked for file {d}/apache@.service"]),
        ("etcd@10.0.0.1", ["looked for file {d}/etcd@10.0.0.1.service", "looked for file {d}/etcd@.service"]),
    ],
)  # fmt: skip
def test_where_it_looked_when_nothing_is_there(
    walkthrough: Path, arg: str, looked_at: list[str]
) -> None:
    [found] = read_arguments([arg])
    assert found.local is None
    assert list(found.looked_at) == [p.replace("{d}", os.getcwd()) for p in looked_at]


def test_a_dangling_link_is_named_as_such(walkthrough: Path) -> None:
    os.symlink("gone.service", walkthrough / "dangling.service")
    [found] = read_arguments(["dangling.service"])
    assert found.looked_at == (
        f"file {walkthrough}/dangling.service is a symbolic link to the missing gone.service",
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param("[Unit\n", "line 1: unable to find end of section", id="unparsable"),
        pytest.param(None, "Is a directory", id="a-directory"),
    ],
)
def test_an_unreadable_unit_file_is_a_value_naming_why(
    walkthrough: Path, content: str | None, problem: str
) -> None:
    if content is None:
        (walkthrough / "bad.service").mkdir()
    else:
        (walkthrough / "bad.service").write_text(content)
    [found] = read_arguments(["bad.service"])
    assert found.local is not None and found.local.unit is None
    assert found.local.problem == f"{walkthrough}/bad.service: {problem}"
