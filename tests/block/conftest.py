"""Fixtures of the block-layer and ``vmforge img`` tests (qemu-img is the oracle).

- mark a test ``@pytest.mark.formats("raw", "qcow2")`` to skip it when a format
  plugin is not installed;
- ``qemu`` runs qemu-img (skips when qemu-utils is missing);
- ``img`` runs ``vmforge img ...`` in-process through ``vmforge.cli.main.main``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from vmforge.testing import qemu_tools
from vmforge.testing.oracles import oracle_missing

QEMU_IMG = shutil.which("qemu-img")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "formats(*names): needs these format plugins")


@pytest.fixture(autouse=True)
def _needs_formats(request: pytest.FixtureRequest) -> None:
    marker = request.node.get_closest_marker("formats")
    if marker is None:
        return
    from vmforge.block.probe import format_names

    missing = [n for n in marker.args if n not in format_names()]
    if missing:
        pytest.skip(f"format plugin(s) {missing} not installed")


@dataclasses.dataclass
class Run:
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def qemu() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``qemu("img", "info", path)`` / ``qemu("io", ...)``: the oracle, checked."""
    if QEMU_IMG is None:
        oracle_missing("qemu-img is not installed (Debian package qemu-utils)")

    def run(tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        if tool == "img":           # (its luks PBKDF2 flake retried there)
            return qemu_tools.qemu_img(*args, check=check)
        return subprocess.run([f"qemu-{tool}", *args], capture_output=True, text=True,
                              check=check)

    return run


@pytest.fixture
def img(capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    """``img("info", path)`` runs ``vmforge img info path`` in-process."""
    from vmforge.cli.main import main

    def run(*argv: str) -> Run:
        capsys.readouterr()
        rc = main(["img", *argv])
        cap = capsys.readouterr()
        return Run(rc, cap.out, cap.err)

    return run
