"""The man pages: scripts/man.py (what `make man` runs) writes fleetctl.1 and fleetd.8 from the
click definitions; `man -l` renders them (groff when man-db is missing; a structural check when
neither is installed), groff finds nothing to warn about, and the rendered text holds every
command, flag, example and variable the code defines."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from fleetd.cli import EXAMPLES, fleetctl
from fleetd.config import OPTIONS
from fleetd.main import fleetd

REPO = Path(__file__).parents[2]
EPOCH = "1767225600"  # 2026-01-01: SOURCE_DATE_EPOCH makes the pages reproducible


def generate(directory: Path) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "man.py"), str(directory)],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "SOURCE_DATE_EPOCH": EPOCH},
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    return {name: (directory / name).read_text() for name in ("fleetctl.1", "fleetd.8")}


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return generate(tmp_path_factory.mktemp("man"))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory, pages: dict[str, str]) -> dict[str, str]:
    """Each page as a reader sees it (plain text), or its source when nothing can render it."""
    directory = tmp_path_factory.mktemp("rendered")
    out: dict[str, str] = {}
    for name, page in pages.items():
        path = directory / name
        path.write_text(page)
        if shutil.which("man"):
            argv = ["man", "-l", str(path)]
        elif shutil.which("groff"):
            argv = ["groff", "-man", "-Tutf8", "-P", "-cbou", str(path)]
        else:  # nothing renders roff here: the structural test below is all there is
            out[name] = page.replace("\\-", "-").replace("\\e", "\\")
            continue
        env = {**os.environ, "MANWIDTH": "120", "MAN_KEEP_FORMATTING": "", "LANG": "C.UTF-8"}
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, check=False, env=env
        )
        assert (done.returncode, done.stderr) == (0, ""), done.stderr
        out[name] = re.sub(r".\x08", "", done.stdout).replace("\u2212", "-")  # no overstrike
    return out


def test_pages_are_roff_man_pages(pages: dict[str, str]) -> None:
    for name, page in pages.items():
        title, section = name.split(".")
        assert page.startswith(f'.TH {title.upper()} {section} "2026-01-01" "fleetd ')
        for heading in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "SEE ALSO"):
            assert f"\n.SH {heading}\n" in page, (name, heading)
        # no text line starts with a control character by accident
        assert not [line for line in page.splitlines() if line.startswith("'")]


def test_generation_is_reproducible(tmp_path: Path, pages: dict[str, str]) -> None:
    assert generate(tmp_path) == pages


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_groff_has_nothing_to_warn_about(tmp_path: Path, pages: dict[str, str]) -> None:
    for name, page in pages.items():
        (tmp_path / name).write_text(page)
        done = subprocess.run(
            ["groff", "-man", "-Tutf8", "-ww", "-z", str(tmp_path / name)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert (done.returncode, done.stderr) == (0, ""), (name, done.stderr)


def _words(text: str) -> str:
    return " ".join(text.split())


def test_fleetctl_page_holds_every_command_flag_example_and_variable(
    rendered: dict[str, str],
) -> None:
    text = _words(rendered["fleetctl.1"])
    for name, command in fleetctl.commands.items():
        assert f"fleetctl {name} " in text, name
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert param.opts[-1] in text, (name, param.opts)
        for example in EXAMPLES[name]:
            assert _words(example) in text, example
    for param in fleetctl.params:
        if isinstance(param, click.Option):
            assert param.opts[0] in text
            if isinstance(param.envvar, str):
                assert f"{param.envvar} {param.opts[0]}" in text


def test_fleetd_page_holds_every_option_with_its_file_name_variable_and_reload(
    rendered: dict[str, str],
) -> None:
    text = _words(rendered["fleetd.8"])
    for option in OPTIONS:
        if option.deprecated:
            continue
        assert f"{option.flag} {option.metavar}" in text, option.name
        assert f"env: {option.env}]" in text, option.name
        assert f"fleet.conf: {option.name}." in text, option.name
    for name in ("ctl", "leave", "version", "sandbox up", "sandbox down", "sandbox exec"):
        assert f"fleetd {name} " in text, name
    assert "SIGHUP" in text and "fleetd.configuration_reloaded" in text
    assert len(fleetd.params) > len(OPTIONS)  # --config and --version besides the options


def test_make_man_writes_the_pages() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^man: .*\n\t\$\(BIN\)/python scripts/man\.py man$", makefile, re.M)
