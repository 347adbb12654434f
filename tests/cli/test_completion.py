"""Shell completion through the real fleetctl entry point.

The bash cases source `fleetctl completion bash` in a real bash and call its completion
function as bash does on TAB (COMP_WORDS, COMP_CWORD): the function runs fleetctl with
`_FLEETCTL_COMPLETE=bash_complete`, and COMPREPLY holds what bash would offer. Unit names are
completed from a real API server (tests/cli/conftest.py).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import Cluster

BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEETCTL_", "_FLEETCTL"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def fleetctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "fleetctl"), *args],
        capture_output=True, text=True, timeout=30, check=False, env=env or _env(),
    )  # fmt: skip


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    done = fleetctl("completion", "bash")
    assert (done.returncode, done.stderr) == (0, "")
    path = tmp_path_factory.mktemp("completion") / "fleetctl.bash"
    path.write_text(done.stdout)
    return path


def bash_complete(script: Path, words: list[str]) -> list[str]:
    """What bash offers after typing `words` (the last one being completed) and TAB."""
    line = " ".join(shlex.quote(w) for w in words)
    program = (
        f"source {shlex.quote(str(script))}\n"
        f"COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; COMPREPLY=()\n"
        "_fleetctl_completion fleetctl\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "-c", program], capture_output=True, text=True, timeout=30, check=False, env=_env()
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    return [line for line in done.stdout.splitlines() if line]


@pytest.mark.parametrize(
    ("words", "offered"),
    [
        (["fleetctl", "li"], ["list-machines", "list-unit-files", "list-units"]),  # li<TAB>
        (["fleetctl", "list-m"], ["list-machines"]),
        (["fleetctl", "--req"], ["--request-timeout"]),  # the global flags
        (["fleetctl", "list-units", "--output", ""], ["table", "json"]),  # a flag's choices
        (["fleetctl", "--endpoint", "unix:///x.sock", "st"], ["start", "status", "stop"]),
        (["fleetctl", "completion", ""], ["bash", "zsh", "fish"]),
        (["fleetctl", "help", "set"], ["set-metadata"]),  # help's argument: the commands
        (["fleetctl", "nothing-like-it"], []),
    ],
    ids=["li", "prefix", "global-flag", "choices", "after-global-flags", "shells", "help", "none"],
)
def test_bash_completion(bash_script: Path, words: list[str], offered: list[str]) -> None:
    assert bash_complete(bash_script, words) == offered


def test_the_bash_script_registers_fleetctl(bash_script: Path) -> None:
    done = subprocess.run(
        ["bash", "-c", f"source {shlex.quote(str(bash_script))}; complete -p fleetctl"],
        capture_output=True, text=True, timeout=30, check=False, env=_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "complete -o nosort -F _fleetctl_completion fleetctl"


def _protocol(words: str, cword: int | str, shell: str = "bash") -> list[str]:
    """fleetctl's answer to a shell's completion call, as the scripts make it (bash and zsh
    give the index of the word completed, fish the word itself)."""
    env = _env() | {"COMP_WORDS": words, "COMP_CWORD": str(cword)}
    env["_FLEETCTL_COMPLETE"] = f"{shell}_complete"
    done = subprocess.run(
        [str(BIN / "fleetctl")], capture_output=True, text=True, timeout=30, check=False, env=env
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    return [line for line in done.stdout.splitlines() if line]


@pytest.mark.parametrize("command", ["submit", "load", "start"])
def test_unit_files_complete_as_local_files(command: str) -> None:
    # bash is told to complete file names (compopt -o default) for the local unit files
    assert _protocol(f"fleetctl {command} hel", 2) == ["file,hel"]


def test_unit_names_complete_nothing_when_the_api_cannot_answer(tmp_path: Path) -> None:
    words = f"fleetctl --endpoint unix://{tmp_path}/none.sock status hel"
    assert _protocol(words, 5) == []  # no error on the terminal either (checked in _protocol)


async def test_unit_names_complete_from_the_api(cluster: Cluster) -> None:
    for name in ("hello.service", "apache@1.service", "apache@2.service"):
        rc, _, err = await cluster.fleetctl("submit", name)
        assert rc == 0, err
    env = cluster.env | {"_FLEETCTL_COMPLETE": "bash_complete", "COMP_CWORD": "4"}
    for typed, names in (
        ("apache", ["apache@1.service", "apache@2.service"]),
        ("h", ["hello.service"]),
    ):
        env["COMP_WORDS"] = f"fleetctl --endpoint {cluster.endpoint} status {typed}"
        proc = await asyncio.create_subprocess_exec(  # the loop keeps serving the API
            str(BIN / "fleetctl"), env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert (proc.returncode, err) == (0, b"")
        assert out.decode().splitlines() == [f"plain,{name}" for name in names]


@pytest.mark.parametrize(
    ("shell", "registers"),
    [
        ("zsh", "compdef _fleetctl_completion fleetctl"),
        ("fish", "complete --no-files --command fleetctl --arguments"),
    ],
)
def test_zsh_and_fish_scripts(shell: str, registers: str) -> None:
    # no zsh or fish on the test machines: the script names fleetctl and its protocol; the
    # answers themselves are the ones bash gets (click's protocol, checked above and here)
    done = fleetctl("completion", shell)
    assert done.returncode == 0 and registers in done.stdout
    assert f"_FLEETCTL_COMPLETE={shell}_complete" in done.stdout
    answer = _protocol("fleetctl li", 1 if shell == "zsh" else "li", shell)
    names = {"list-machines", "list-unit-files", "list-units"}
    if shell == "fish":  # type,value<TAB>help lines
        assert {line.split(",")[1].split("\t")[0] for line in answer} == names
    else:  # type, value, help: three lines each
        assert set(answer[1::3]) == names


def test_an_ambiguous_prefix_already_typed_is_no_error(bash_script: Path) -> None:
    # `fleetctl li <TAB>`: li could be three commands; as after any word that is no command,
    # click offers the commands again, and nothing is printed on the terminal (bash_complete
    # checks stderr and the exit status)
    assert "list-units" in bash_complete(bash_script, ["fleetctl", "li", ""])


def test_an_unknown_shell_is_refused() -> None:
    done = fleetctl("completion", "tcsh")
    assert done.returncode == 2 and done.stdout == ""
    assert "'tcsh' is not one of 'bash', 'zsh', 'fish'" in done.stderr
