"""The conformance kit's read-only mode, seen from a read-only format: run by option
it asks for a builder, and it catches a driver that lets a write through."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bochs_images import build_bochs

from vmforge.block import driver_class
from vmforge.testing.blockkit import BlockDriverConformance, KitSetup, reference_data

HERE = Path(__file__).parent


def _pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})


def test_by_option_without_a_builder_fails_saying_why(tmp_path: Path) -> None:
    r = _pytest(tmp_path, "--vmforge-format", "bochs", "-k", "patterns", str(tmp_path))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "format bochs cannot create images, so the kit needs a builder" in r.stdout


def test_by_option_with_the_plugins_conftest(tmp_path: Path) -> None:
    # the plugin's conftest (its tests folder on the command line) gives the builder
    r = _pytest(tmp_path, "--vmforge-format", "bochs", "-k", "TestBlockFormat",
                str(HERE / "conftest.py"), str(HERE))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "failed" not in r.stdout and "passed" in r.stdout
    # create options make no sense for a format that cannot create
    r = _pytest(tmp_path, "--vmforge-format", "bochs", "--vmforge-create-opt", "size=1",
                "-k", "TestBlockFormat and patterns", str(HERE))
    assert r.returncode == 1 and "create options ['size'] make no sense" in r.stdout


def test_writes_refused_catches_a_leaky_driver(tmp_path: Path) -> None:
    base = driver_class("bochs")

    class Leaky(base):  # type: ignore[misc, valid-type]
        """Opens read-write and writes into the file: what the kit must refuse."""

        @classmethod
        def open(cls, path: str, *, readonly: bool = True, **options: Any) -> Any:
            drv = super().open(path, readonly=True, **options)
            drv.readonly = readonly
            return drv

        def pwritev(self, offset: int, buffers: Any) -> None:
            with open(self.filename, "r+b") as f:
                f.seek(600)
                f.write(b"".join(bytes(b) for b in buffers))

    model = reference_data(1 << 20)
    path = str(tmp_path / "img")
    build_bochs(path, model)
    kit = KitSetup("bochs", True, builder=build_bochs)
    suite = BlockDriverConformance()
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        suite.test_writes_refused(Leaky, kit, (path, model), tmp_path)
    build_bochs(path, model)
    suite.test_writes_refused(base, kit, (path, model), tmp_path)   # the real one passes
