"""Packaging: the hot paths are compiled, and a plain ``pip install .`` works."""

from __future__ import annotations

import importlib
import importlib.machinery
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYX = sorted(p.stem for p in (ROOT / "src" / "_fast").glob("*.pyx"))


@pytest.mark.parametrize("name", PYX)
def test_fast_modules_are_compiled(name: str) -> None:
    module = importlib.import_module(f"vmforge._fast.{name}")
    assert module.__file__ is not None
    assert module.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), (
        f"vmforge._fast.{name} is not a compiled extension: {module.__file__}")


@pytest.mark.slow
def test_plain_install_in_a_fresh_venv(tmp_path: Path) -> None:
    """Build a wheel of the core and install it (not editable) in a new venv."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), str(ROOT),
                    str(ROOT / "src" / "plugins" / "vmforge-raw")],
                   check=True, capture_output=True, text=True, cwd=tmp_path)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False, system_site_packages=False)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    deps = {Path(m.__file__).parent for m in (importlib.import_module("pluggy"),
                                              importlib.import_module("importlib_metadata"))}
    (Path(site) / "deps.pth").write_text("".join(f"{d.parent}\n" for d in deps))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site,
                    *map(str, wheels.glob("*.whl"))], check=True, capture_output=True, text=True)
    out = subprocess.run(
        [str(py), "-c",
         "import importlib.machinery as m, vmforge._fast.mmio as f, vmforge.plugins as p;"
         "assert f.__file__.endswith(tuple(m.EXTENSION_SUFFIXES)), f.__file__;"
         "print(f.__file__); print(p.registry().names('block'))"],
        check=True, capture_output=True, text=True, cwd=tmp_path)
    compiled, names = out.stdout.splitlines()
    assert compiled.startswith(site), f"imported {compiled}, not the wheel installed in {site}"
    assert "raw" in names
