"""vmforge.testing.oracles: a missing oracle skips the test, or fails it in CI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vmforge.testing import oracles

TESTS = '''
import pytest
from vmforge.testing.oracles import needs, oracle_missing, require_files, require_module
from vmforge.testing.oracles import require_program

def test_program():
    require_program("vmforge-no-such-program", "vmforge-no-such-package")

def test_present_program_is_found():
    assert require_program("sh", "dash").endswith("sh")

@needs("vmforge-no-such-program", package="vmforge-no-such-package")
def test_mark():
    pass

@needs(files=["/vmforge-no-such-file"], what="the firmware")
def test_mark_files():
    pass

def test_files():
    require_files(["/vmforge-no-such-file"], "a guest")

def test_missing():
    oracle_missing("the oracle is not here")
'''

MODULE = '''
from vmforge.testing.oracles import require_module
require_module("vmforge_no_such_module", "pip install it")

def test_never_runs():
    pass
'''


def _pytest(tmp_path: Path, ci: str | None) -> str:
    (tmp_path / "test_a.py").write_text(TESTS)
    (tmp_path / "test_b.py").write_text(MODULE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
                           "-p", "no:randomly", "--continue-on-collection-errors",
                           str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    return proc.stdout + proc.stderr


def _summary(out: str) -> dict[str, int]:
    last = out.strip().splitlines()[-1]
    return {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", last)}


def test_missing_oracles_skip_outside_ci(tmp_path: Path) -> None:
    out = _pytest(tmp_path, None)
    assert _summary(out) == {"passed": 1, "skipped": 6}, out
    assert "vmforge-no-such-program is not installed (Debian package vmforge-no-such-package)" \
        in out
    assert "the firmware is missing: /vmforge-no-such-file" in out
    assert "vmforge_no_such_module cannot be imported" in out


def test_missing_oracles_fail_in_ci(tmp_path: Path) -> None:
    out = _pytest(tmp_path, "true")
    # a mark fails at set-up and the module at collection: errors, which fail the run too
    assert _summary(out) == {"failed": 3, "passed": 1, "errors": 3}, out
    assert "CI=true: a missing oracle is a failure" in out


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("TRUE", True), ("1", True),
                                                 ("false", False), ("", False), ("0", False)])
def test_in_ci(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("CI", value)
    assert oracles.in_ci() is expected
