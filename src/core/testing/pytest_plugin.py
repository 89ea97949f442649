"""vmforge's pytest plugin (entry point ``pytest11``): the plugin-author kits.

Loaded by pytest in every environment where vmforge is installed, so it must
stay import-light and add nothing unless asked: the kits are imported only
when a test uses them.

- ``pytest --vmforge-format NAME`` (repeatable) runs the disk-format
  conformance suite (:mod:`vmforge.testing.blockkit`) against the installed
  format ``NAME``, on top of whatever else was collected;
- the fixture ``vmforge_format`` is the format of the current run of that
  suite (None outside it);
- the mark ``vmforge_needs`` (made by :func:`vmforge.testing.oracles.needs`)
  skips a test whose oracle is absent, or fails it in CI (``CI=true``).
"""

from __future__ import annotations

from typing import Any

import pytest

_SUITE = "vmforge.testing.format_suite"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vmforge", "vmforge plugin kits")
    group.addoption("--vmforge-format", action="append", default=[], metavar="NAME",
                    dest="vmforge_format",
                    help="run the block-format conformance suite against the installed "
                    "format NAME (repeatable)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "vmforge_needs(*programs, package, files, what): the host programs and "
        "files the test needs (vmforge.testing.oracles.needs); skipped when absent, "
        "failed in CI")


def pytest_runtest_setup(item: pytest.Item) -> None:
    marks = list(item.iter_markers("vmforge_needs"))
    if marks:
        from vmforge.testing.oracles import check_mark

        for mark in marks:
            check_mark(mark)


@pytest.fixture
def vmforge_format() -> str | None:
    """The format under test in the conformance suite run by ``--vmforge-format``."""
    return None


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say which format plugins the suite runs against (name, distribution, version)."""
    formats = config.getoption("vmforge_format")
    if not formats:
        return []
    from vmforge.plugins import PluginError, registry

    parts = []
    for name in formats:
        try:
            info = registry().info("block", name)
            parts.append(f"{name} ({info.dist} {info.version})")
        except PluginError:
            parts.append(f"{name} (not installed)")
    return ["vmforge block-format conformance: " + ", ".join(parts)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    cls = metafunc.cls
    if cls is None or not getattr(cls, "vmforge_from_option", False):
        return
    if "vmforge_format" in metafunc.fixturenames:
        formats = metafunc.config.getoption("vmforge_format") or []
        metafunc.parametrize("vmforge_format", formats, scope="class")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[Any]) -> None:
    if not config.getoption("vmforge_format"):
        return
    if any(getattr(item, "module", None) is not None
           and item.module.__name__.endswith("format_suite") for item in items):
        return  # asked for by path or --pyargs already
    import importlib
    from pathlib import Path

    suite = importlib.import_module(_SUITE)
    assert suite.__file__ is not None, f"{_SUITE} is not a file"
    module = pytest.Module.from_parent(session, path=Path(suite.__file__))
    items.extend(session.genitems(module))
