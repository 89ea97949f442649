"""Packaging: the hot paths are compiled, and a plain ``pip install .`` works."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from vmforge.testing.oracles import require_program

ROOT = Path(__file__).resolve().parent.parent
PYX = sorted(p.stem for p in (ROOT / "src" / "_fast").glob("*.pyx"))


@pytest.mark.parametrize("name", PYX)
def test_fast_modules_are_compiled(name: str) -> None:
    module = importlib.import_module(f"vmforge._fast.{name}")
    assert module.__file__ is not None
    assert module.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), (
        f"vmforge._fast.{name} is not a compiled extension: {module.__file__}")


PLUGINS = ROOT / "src" / "plugins"

SPIKE_PROGRAM = r"""
    .section .text.init
    .globl _start
_start:
    li t0, 0x200bff8            # the CLINT's mtime
    ld t1, 0(t0)
    la t2, tohost
    li t3, (7 << 1) | 1         # HTIF exit(7)
    sd t3, 0(t2)
1:  j 1b
    .section .tohost, "aw", @progbits
    .align 6
    .globl tohost
tohost: .dword 0
    .align 6
    .globl fromhost
fromhost: .dword 0
"""


def _build_wheels(out: Path, *projects: Path) -> list[Path]:
    before = set(out.glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(out), *map(str, projects)],
                   check=True, capture_output=True, text=True, cwd=out)
    return sorted(set(out.glob("*.whl")) - before)


@pytest.fixture(scope="module")
def core_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of the core, built once for the module (it compiles the hot paths)."""
    out = tmp_path_factory.mktemp("core-wheel")
    (wheel,) = _build_wheels(out, ROOT)
    return wheel


def _third_party_requirements(name: str) -> set[str]:
    """The distributions ``name`` needs, transitively, apart from vmforge's own."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        for spec in importlib.metadata.requires(todo.pop()) or []:
            req = Requirement(spec)
            dep = canonicalize_name(req.name)
            if (req.marker is None or req.marker.evaluate({"extra": ""})) \
                    and not dep.startswith("vmforge") and dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def _fresh_venv(tmp_path: Path, wheels: list[Path]) -> tuple[Path, Path]:
    """A new venv holding the wheels (not editable) and copies of the core's
    third-party dependencies, nothing else: (its python, its site-packages)."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False, system_site_packages=False)
    py = env_dir / "bin" / "python"
    site = Path(subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True).stdout.strip())
    for dep in _third_party_requirements("vmforge"):
        dist = importlib.metadata.distribution(dep)
        for f in dist.files or []:
            if f.parts[0] != ".." and "__pycache__" not in f.parts:
                dest = site / f
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(str(f.locate())), dest)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(site), *map(str, wheels)], check=True, capture_output=True, text=True)
    return py, site


def _unmet_requirements(site: Path) -> list[str]:
    """What the distributions in ``site`` require and ``site`` does not hold."""
    dists = list(importlib.metadata.distributions(path=[str(site)]))
    names = {canonicalize_name(d.metadata["Name"]) for d in dists}
    unmet = []
    for d in dists:
        for spec in d.requires or []:
            req = Requirement(spec)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            if canonicalize_name(req.name) not in names:
                unmet.append(f"{d.metadata['Name']} requires {spec}")
    return unmet


@pytest.mark.slow
def test_plain_install_in_a_fresh_venv(tmp_path: Path, core_wheel: Path) -> None:
    """Install a wheel of the core and a plugin (not editable) in a new venv."""
    wheels = [core_wheel, *_build_wheels(tmp_path, PLUGINS / "vmforge-raw")]
    py, site = _fresh_venv(tmp_path, wheels)
    assert _unmet_requirements(site) == []
    out = subprocess.run(
        [str(py), "-c",
         "import importlib.machinery as m, vmforge._fast.mmio as f, vmforge.plugins as p;"
         "assert f.__file__.endswith(tuple(m.EXTENSION_SUFFIXES)), f.__file__;"
         "print(f.__file__); print(p.registry().names('block'))"],
        check=True, capture_output=True, text=True, cwd=tmp_path)
    compiled, names = out.stdout.splitlines()
    assert compiled.startswith(str(site)), f"imported {compiled}, not the wheel installed in {site}"
    assert "raw" in names


@pytest.mark.slow
def test_spike_installs_with_the_riscv_devices_alone(tmp_path: Path, core_wheel: Path) -> None:
    """vmforge-riscv-spike needs only vmforge and vmforge-riscv-devices: with
    nothing else installed (no riscv-virt, no serial) its plugins load and a
    program that reads the CLINT runs to its exit status."""
    cc = require_program("riscv64-unknown-elf-gcc", "gcc-riscv64-unknown-elf")
    plugins = _build_wheels(tmp_path, PLUGINS / "vmforge-riscv-devices",
                            PLUGINS / "vmforge-riscv-spike")
    py, site = _fresh_venv(tmp_path, [core_wheel, *plugins])
    assert _unmet_requirements(site) == []
    installed = {d.metadata["Name"] for d in importlib.metadata.distributions(path=[str(site)])}
    assert {"vmforge-riscv-virt", "vmforge-serial"}.isdisjoint(installed)

    cli = [str(py), "-m", "vmforge.cli.main"]
    check = subprocess.run([*cli, "plugins", "--check"], capture_output=True, text=True,
                           cwd=tmp_path, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    listed = subprocess.run([*cli, "plugins", "--json"], check=True, capture_output=True,
                            text=True, cwd=tmp_path, timeout=60).stdout
    names = {(p["kind"], p["name"]) for p in json.loads(listed)}
    assert {("machine", "spike"), ("device", "riscv-clint")} <= names
    assert ("machine", "riscv-virt") not in names

    (tmp_path / "prog.S").write_text(SPIKE_PROGRAM)
    prog = tmp_path / "prog.elf"
    subprocess.run([cc, "-nostdlib", "-nostartfiles", "-march=rv64gc", "-mabi=lp64d",
                    "-Wl,-N", "-Wl,-Ttext=0x80000000", "-Wl,--build-id=none", "-o", str(prog),
                    str(tmp_path / "prog.S")], check=True)
    run = subprocess.run([*cli, "run", "-M", "spike", "-bios", "none", "-kernel", str(prog)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert run.returncode == 7, run.stdout + run.stderr
