"""The conformance kit's create options, seen from vpc (whose default size rounding
to a CHS geometry the kit cannot accept): they reach ``create``, scoped by format."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def _pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-k", "TestBlockFormat and (create_sizes or patterns)", *args],
                          capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})


def test_create_opt_reaches_create(tmp_path: Path) -> None:
    r = _pytest(tmp_path, "--vmforge-format", "vpc", str(tmp_path))
    assert r.returncode == 1 and "failed" in r.stdout   # sizes rounded up: the kit sees it
    for opt in ("force_size=on", "vpc:force_size=on", "vpc:force-size=yes"):
        r = _pytest(tmp_path, "--vmforge-format", "vpc", "--vmforge-create-opt", opt,
                    str(tmp_path))
        assert r.returncode == 0, opt + r.stdout + r.stderr
    # scoped to another format: vpc does not get it
    r = _pytest(tmp_path, "--vmforge-format", "vpc", "--vmforge-create-opt",
                "raw:force_size=on", str(tmp_path))
    assert r.returncode == 1
    # the command line wins over the plugin's conftest
    r = _pytest(tmp_path, "--vmforge-format", "vpc", "--vmforge-create-opt",
                "force_size=off", str(HERE / "conftest.py"))
    assert r.returncode == 1


def test_conftest_gives_the_default(tmp_path: Path) -> None:
    r = _pytest(tmp_path, "--vmforge-format", "vpc", str(HERE / "conftest.py"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_bad_create_opts_are_clear(tmp_path: Path) -> None:
    r = _pytest(tmp_path, "--vmforge-format", "vpc", "--vmforge-create-opt", "force_size",
                str(tmp_path))
    assert r.returncode == 4 and "expected [FORMAT:]NAME=VALUE" in r.stderr
    r = _pytest(tmp_path, "--vmforge-format", "vpc", "--vmforge-create-opt", "nope=1",
                str(tmp_path))
    assert r.returncode == 1 and "has no create option 'nope'" in r.stdout
