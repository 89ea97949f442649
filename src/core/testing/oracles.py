"""What the tests compare against (oracles) and the host tools they need.

A test that needs QEMU, qemu-img, unicorn, a cross compiler, Debian's firmware
or a built guest asks for it here.  When it is absent the test is skipped,
naming what to install, except in CI (``CI=true``, as GitHub Actions, GitLab
and most CI services set it): there a missing oracle fails the run, because
``make test`` installs every one of them and a skip would hide lost coverage.

- :func:`oracle_missing` is the one place that decides skip or fail;
- :func:`require_program`, :func:`require_module` and :func:`require_files`
  check and return what they found;
- :func:`needs` is a mark for whole tests or modules (``pytestmark = needs(...)``),
  checked when each test is set up (``vmforge.testing.pytest_plugin``).
"""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

__all__ = ["in_ci", "needs", "oracle_missing", "require_files", "require_module",
           "require_program"]

#: the mark :func:`needs` makes (registered by vmforge's pytest plugin)
MARK = "vmforge_needs"


def in_ci() -> bool:
    """True when running in CI (the environment variable ``CI`` is true)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes", "on")


def oracle_missing(what: str) -> NoReturn:
    """Skip the current test (or module) because ``what`` is absent; fail in CI.

    ``what`` says what is missing and how to get it, e.g.
    ``"qemu-img is not installed (Debian package qemu-utils)"``.
    """
    if in_ci():
        pytest.fail(f"{what}; CI=true: a missing oracle is a failure "
                    "(make test installs every one)", pytrace=False)
    pytest.skip(what, allow_module_level=True)


def require_program(name: str, package: str) -> str:
    """The path of the host program ``name`` from the Debian ``package``."""
    path = shutil.which(name)
    if path is None:
        oracle_missing(f"{name} is not installed (Debian package {package})")
    return path


def require_module(name: str, install: str) -> ModuleType:
    """Import the module ``name``; ``install`` says how to get it (pip, an extra...)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        error = str(exc)
    oracle_missing(f"{name} cannot be imported ({error}); {install}")


def require_files(paths: Iterable[str | os.PathLike[str]], what: str) -> list[Path]:
    """``paths`` as :class:`Path` objects, all present; ``what`` names them and
    says how to get them (``"Debian's OpenSBI (apt-get install opensbi)"``)."""
    found = [Path(p) for p in paths]
    missing = [str(p) for p in found if not p.exists()]
    if missing:
        oracle_missing(f"{what} is missing: {', '.join(missing)}")
    return found


def needs(*programs: str, package: str = "", files: Iterable[str | os.PathLike[str]] = (),
          what: str = "") -> pytest.MarkDecorator:
    """A mark: the test needs these host ``programs`` (from Debian ``package``)
    and ``files`` (described by ``what``), checked when the test is set up."""
    return getattr(pytest.mark, MARK)(*programs, package=package,
                                      files=tuple(str(f) for f in files), what=what)


def check_mark(mark: pytest.Mark) -> None:
    """Check a :func:`needs` mark (called by the pytest plugin at set-up)."""
    for name in mark.args:
        require_program(name, mark.kwargs.get("package") or "?")
    files = mark.kwargs.get("files") or ()
    if files:
        require_files(files, mark.kwargs.get("what") or "a file the test needs")
