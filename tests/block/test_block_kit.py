"""The conformance kit itself: runnable by option, and it catches a misbehaving driver."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vmforge.block import BlockError, driver_class
from vmforge.testing.blockkit import BlockDriverConformance


@pytest.mark.formats("example")
def test_vmforge_format_option_runs_the_suite(tmp_path) -> None:
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "--vmforge-format", "example", str(tmp_path)],
                       capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "passed" in r.stdout and "failed" not in r.stdout
    assert "TestBlockFormat" not in r.stdout  # quiet run: only the summary
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--co",
                        "--vmforge-format", "example", str(tmp_path)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert "vmforge block-format conformance: example (vmforge-example-format " in r.stdout


def test_without_the_option_nothing_is_added(tmp_path) -> None:
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "--co", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    assert "no tests collected" in r.stdout


@pytest.mark.formats("example")
def test_kit_flags_a_driver_that_crashes_on_a_bad_header(tmp_path) -> None:
    base = driver_class("example")

    class Sloppy(base):  # type: ignore[misc, valid-type]
        @classmethod
        def open(cls, path, *, readonly=True, **options):  # type: ignore[no-untyped-def]
            with open(path, "rb") as f:
                if len(f.read(4096)) < 4096:
                    raise IndexError("header too short")  # should be a BlockError
            return super().open(path, readonly=readonly, **options)

    path = tmp_path / "short"
    path.write_bytes(b"VMFXMAP\0")
    kit = BlockDriverConformance()
    with pytest.raises(pytest.fail.Exception, match="IndexError"):
        kit._assert_clean_failure(Sloppy, str(path), "short file")
    kit._assert_clean_failure(base, str(path), "short file")  # the real driver is clean
    with pytest.raises(BlockError):
        base.open(str(path))


@pytest.mark.formats("example")
def test_kit_works_with_plugin_autoload_off(tmp_path) -> None:
    kit_user = (Path(__file__).resolve().parents[2] / "src" / "plugins" /
                "vmforge-example-format" / "tests" / "test_example_conformance.py")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(kit_user)], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
