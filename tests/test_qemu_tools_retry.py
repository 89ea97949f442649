"""vmforge.testing.qemu_tools retries qemu-img's PBKDF2 timing flake (QEMU's
"Unable to get accurate CPU usage" on a busy host) and nothing else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vmforge.testing import qemu_tools

FLAKY = """
import pathlib, sys
count = pathlib.Path(sys.argv[1])
n = int(count.read_text()) if count.exists() else 0
count.write_text(str(n + 1))
if n < int(sys.argv[2]):
    sys.stderr.write(sys.argv[3] + "\\n")
    sys.exit(1)
"""


def _cmd(tmp_path: Path, failures: int, message: str) -> list[str]:
    script = tmp_path / "flaky.py"
    script.write_text(FLAKY)
    return [sys.executable, str(script), str(tmp_path / "count"), str(failures), message]


@pytest.fixture(autouse=True)
def _no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu_tools, "_PBKDF_PAUSES", (0.0,) * len(qemu_tools._PBKDF_PAUSES))


def _runs(tmp_path: Path) -> int:
    return int((tmp_path / "count").read_text())


def test_the_pbkdf2_flake_is_retried(tmp_path: Path) -> None:
    qemu_tools.run_quietly(_cmd(tmp_path, 2, "qemu-img: o.luks: Unable to get accurate CPU usage"))
    assert _runs(tmp_path) == 3


def test_other_failures_are_not_retried(tmp_path: Path) -> None:
    with pytest.raises(subprocess.CalledProcessError) as info:
        qemu_tools.run_quietly(_cmd(tmp_path, 1, "qemu-img: Could not open 'x'"))
    assert _runs(tmp_path) == 1
    assert "Could not open" in info.value.stderr


def test_a_flake_that_persists_is_reported(tmp_path: Path) -> None:
    with pytest.raises(subprocess.CalledProcessError) as info:
        qemu_tools.run_quietly(_cmd(tmp_path, 99, "Unable to get accurate CPU usage"))
    assert _runs(tmp_path) == 1 + len(qemu_tools._PBKDF_PAUSES)
    assert "accurate CPU usage" in info.value.stderr
