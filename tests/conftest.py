"""Fixtures shared by the core's tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DISTS = Path(__file__).resolve().parent / "plugin_dists"


def _install(target: Path, names: list[str]) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target),
         *[str(PLUGIN_DISTS / n) for n in names]],
        check=True, capture_output=True, text=True)
    return target


@pytest.fixture(scope="session")
def test_dists(tmp_path_factory) -> Path:
    """A directory where the test distributions (broken, duplicate, ...) are installed."""
    return _install(tmp_path_factory.mktemp("dists"),
                    ["vmforge-test-broken", "vmforge-test-dupraw", "vmforge-test-notaclass",
                     "vmforge-test-hooks", "vmforge-test-machine"])


@pytest.fixture(scope="session")
def bad_hooks_dist(tmp_path_factory) -> Path:
    return _install(tmp_path_factory.mktemp("badhooks"), ["vmforge-test-badhooks"])


@pytest.fixture(scope="session")
def vmforge_cli():
    """``vmforge_cli(*args, extra_path=..., env=...)`` runs the command in a subprocess."""
    return _run_vmforge


def _run_vmforge(*args: str, extra_path: Path | str | None = None,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``vmforge`` command in a subprocess (extra_path first on sys.path)."""
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith("VMFORGE_") and k != "PYTHONPATH"}
    if extra_path is not None:
        full_env["PYTHONPATH"] = str(extra_path)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "vmforge.cli.main", *args],
                          capture_output=True, text=True, env=full_env, timeout=120)
