"""vmforge's pytest plugin (entry point ``pytest11``): the plugin-author kits.

Loaded by pytest in every environment where vmforge is installed, so it must
stay import-light and add nothing unless asked: the kits are imported only
when a test uses them.

- ``pytest --vmforge-format NAME`` (repeatable) runs the disk-format
  conformance suite (:mod:`vmforge.testing.blockkit`) against the installed
  format ``NAME``, on top of whatever else was collected;
- ``--vmforge-create-opt [FORMAT:]NAME=VALUE`` (repeatable) passes a create
  option to that run (to every format, or to ``FORMAT`` only);
- the fixture ``vmforge_format`` is the format of the current run of that
  suite (None outside it);
- the hooks ``pytest_vmforge_create_options`` and ``pytest_vmforge_build_image``
  (:class:`VmforgeFormatHooks`) let a plugin's ``conftest.py`` give that run the
  create options its format needs and, for a format that cannot create images,
  the builder the kit makes its images with;
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
    group.addoption("--vmforge-create-opt", action="append", default=[],
                    metavar="[FORMAT:]NAME=VALUE", dest="vmforge_create_opt",
                    help="a create option for the conformance suite's images, for every "
                    "--vmforge-format or for FORMAT only (repeatable), e.g. "
                    "force_size=on or vpc:subformat=fixed")


class VmforgeFormatHooks:
    """The hooks a ``conftest.py`` implements for ``--vmforge-format`` runs."""

    @pytest.hookspec(firstresult=True)
    def pytest_vmforge_create_options(self, format_name: str) -> dict[str, Any] | None:
        """Create options the conformance suite uses for ``format_name`` (None: not
        mine); ``--vmforge-create-opt`` overrides them."""

    @pytest.hookspec(firstresult=True)
    def pytest_vmforge_build_image(self, format_name: str, path: str,
                                   data: bytes) -> bool | None:
        """For a format without ``create``: write ``data`` (a multiple of 512 bytes)
        as an image of ``format_name`` at ``path`` and return True (None: not mine)."""


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(VmforgeFormatHooks)


def parse_create_opts(values: list[str]) -> dict[str, dict[str, str]]:
    """``["force_size=on", "vpc:subformat=fixed"]`` -> ``{"": {...}, "vpc": {...}}``."""
    out: dict[str, dict[str, str]] = {}
    for text in values:
        target, sep, value = text.partition("=")
        fmt, colon, name = target.rpartition(":")
        if not sep or not name.strip() or (colon and not fmt):
            raise pytest.UsageError(f"--vmforge-create-opt {text!r}: expected "
                                    "[FORMAT:]NAME=VALUE")
        out.setdefault(fmt, {})[name.strip().replace("-", "_")] = value
    return out


def pytest_configure(config: pytest.Config) -> None:
    config.vmforge_create_opts = parse_create_opts(  # type: ignore[attr-defined]
        config.getoption("vmforge_create_opt") or [])
    config.addinivalue_line(
        "markers", "vmforge_needs(*programs, package, files, what): the host programs and "
        "files the test needs (vmforge.testing.oracles.needs); skipped when absent, "
        "failed in CI")
    config.addinivalue_line(
        "markers", "vmforge_kit(mode): a conformance-kit test for 'writable' or "
        "'read_only' formats only (not collected for the others)")


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
    if config.getoption("vmforge_format"):
        _add_format_suite(session, config, items)
    _deselect_inapplicable(config, items)


def _deselect_inapplicable(config: pytest.Config, items: list[Any]) -> None:
    """Kit tests for writable formats are not collected for a read-only one, and
    the other way round (``@pytest.mark.vmforge_kit("writable"|"read_only")``):
    they do not apply, so they are not run at all rather than reported skipped."""
    from vmforge.plugins import PluginError
    from vmforge.testing.blockkit import driver_class, is_read_only

    keep: list[Any] = []
    drop: list[Any] = []
    for item in items:
        mark = item.get_closest_marker("vmforge_kit")
        if mark is None:
            keep.append(item)
            continue
        callspec = getattr(item, "callspec", None)
        name = getattr(item.cls, "format_name", "") or (
            callspec.params.get("vmforge_format") if callspec is not None else None)
        try:
            read_only = is_read_only(driver_class(name)) if name else None
        except (PluginError, ValueError):
            read_only = None        # the test itself reports the missing format
        wanted = mark.args[0] == "read_only"
        (keep if read_only is None or read_only == wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _add_format_suite(session: pytest.Session, config: pytest.Config,
                      items: list[Any]) -> None:
    if any(getattr(item, "module", None) is not None
           and item.module.__name__.endswith("format_suite") for item in items):
        return  # asked for by path or --pyargs already
    import importlib
    from pathlib import Path

    suite = importlib.import_module(_SUITE)
    assert suite.__file__ is not None, f"{_SUITE} is not a file"
    module = pytest.Module.from_parent(session, path=Path(suite.__file__))
    items.extend(session.genitems(module))
