"""The self-contained fleetd (`make bundle`, `make sysext`): start-up against the venv, sizes.

The bundle and the image are built afresh into a temporary directory by the scripts the make
targets run (packaging/build-bundle.sh, build-sysext.sh; offline, from the wheelhouse), and the
build is timed. Then, in interleaved rounds, each command is started RUNS times, one after
another, and each start timed to its exit (a warm page cache for both: the first round is not
kept):
- `fleetctl version` — the bundle's (its one program, started as `fleetctl`) and the venv's
  console script (`.venv/bin/fleetctl`, the Python it was made from);
- `fleetd --help` — the same two, for the daemon's command line (click builds every flag).
The median of each is kept; the headline is bundled / venv, both measured in this run. Sizes:
the bundle's directory, the tarball, the sysext image (the goal: under 60 MB), and the newest
glibc symbol version any of the bundle's ELF files needs.
Writes the block `bundle` of docs/benchmarks.md. No root needed.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_block

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.prefix) / "bin"
QUICK = bool(os.environ.get("BENCH_QUICK"))
RUNS, ROUNDS = (5, 2) if QUICK else (20, 5)
COMMANDS = {"fleetctl version": ("fleetctl", "version"), "fleetd --help": ("fleetd", "--help")}


def build(work: Path) -> tuple[float, Path, Path, Path]:
    """Seconds the two scripts took; the bundle's directory, the tarball, the image."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PYTHON=sys.executable, WHEELHOUSE=str(Path(sys.prefix) / "wheelhouse"))
    out = work / "out"
    started = time.perf_counter()
    subprocess.run([REPO / "packaging" / "build-bundle.sh", out, work / "bundle"], check=True,
                   env=env, stdout=subprocess.DEVNULL)  # fmt: skip
    bundled = time.perf_counter() - started
    subprocess.run([REPO / "packaging" / "build-sysext.sh", out, work / "bundle" / "fleetd",
                    work / "sysext"], check=True, env=env, stdout=subprocess.DEVNULL)  # fmt: skip
    took = time.perf_counter() - started
    print(f"build: bundle {bundled:.1f} s, with the image {took:.1f} s")
    return took, work / "bundle" / "fleetd", *out.glob("*.raw"), *out.glob("*.tar.gz")


def start_ups(argv: tuple[str, ...]) -> list[float]:
    """Seconds from spawn to exit of RUNS starts of `argv`, one after another."""
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - started)
    return times


def highest_glibc(bundle: Path) -> str:
    versions = set()
    for path in bundle.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.read_bytes()[:4] == b"\x7fELF":
            dump = subprocess.run(["objdump", "-T", path], capture_output=True, text=True,
                                  check=True).stdout  # fmt: skip
            versions |= {tuple(map(int, v.split("."))) for v in re.findall(r"GLIBC_([\d.]+)", dump)}
    return ".".join(map(str, max(versions)))


def size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fleetd-bench-bundle-") as tmp:
        took, bundle, image, tarball = build(Path(tmp))
        sizes = {"bundle (directory)": size(bundle), "tarball (.tar.gz)": size(tarball),
                 "sysext image (.raw)": size(image)}  # fmt: skip
        files = sum(1 for _ in bundle.rglob("*"))
        glibc = highest_glibc(bundle)
        kinds = {(name, how): (str((bundle if how == "bundled" else VENV_BIN) / argv[0]), *argv[1:])
                 for name, argv in COMMANDS.items() for how in ("bundled", "venv")}  # fmt: skip
        samples: dict[tuple[str, str], list[float]] = {kind: [] for kind in kinds}
        for round_ in range(ROUNDS + 1):
            for kind, argv in kinds.items():
                times = start_ups(argv)
                if round_:  # the first round warms the page cache for both
                    samples[kind].extend(times)
        image_name = image.name
    medians = {kind: statistics.median(times) for kind, times in samples.items()}
    rows = []
    for name in COMMANDS:
        bundled, venv = medians[(name, "bundled")], medians[(name, "venv")]
        rows.append(f"| `{name}` | {bundled * 1000:.0f} ms | {venv * 1000:.0f} ms | "
                    f"**{bundled / venv:.2f}** |")  # fmt: skip
        print(f"{name}: bundled {bundled * 1000:.0f} ms, venv {venv * 1000:.0f} ms, "
              f"ratio {bundled / venv:.2f}")  # fmt: skip
    size_rows = [f"| {what} | {n / 2**20:.1f} MiB |" for what, n in sizes.items()]
    print(", ".join(f"{what} {n / 2**20:.1f} MiB" for what, n in sizes.items()))
    write_block("bundle", "\n".join([
        "## The self-contained fleetd (bench/bundle.py)",
        "",
        "`make bundle` / `make sysext`: fleetd with its own Python (PyInstaller, one directory). "
        f"Start-up, median of {RUNS * ROUNDS} starts each (warm page cache), spawn to exit, "
        "against the venv's console scripts in the same run:",
        "",
        "| command | bundled | venv | bundled / venv |",
        "| --- | ---: | ---: | ---: |",
        *rows,
        "",
        "| artefact | size |",
        "| --- | ---: |",
        *size_rows,
        "",
        f"The image ({image_name}, squashfs with xz) against the goal of 60 MB: "
        f"{sizes['sysext image (.raw)'] / 1e6:.1f} MB. The bundle holds {files} files and needs "
        f"glibc {glibc} or newer (the newest GLIBC_ symbol version among its ELF files). "
        f"Building the bundle and the image from the wheelhouse took {took:.0f} s.",
    ]))  # fmt: skip


if __name__ == "__main__":
    main()
