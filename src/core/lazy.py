"""Attributes of a package imported on first use (PEP 562), for start-up time.

A format plugin's package names its driver class (the entry point
``vmforge_x:X``) but must not import the driver with the package: probing
imports ``vmforge_x.probe`` alone (see :mod:`vmforge.block.probe`)::

    # vmforge_x/__init__.py
    from vmforge.lazy import lazy_attributes

    __all__ = ["X"]
    __getattr__ = lazy_attributes(__name__, {"X": "vmforge_x.driver"})

And a module's logger, for the same reason (importing :mod:`logging` costs ~9 ms:
traceback, threading, string, weakref): ``log = lazy_logger(__name__)`` is a
stand-in that imports :mod:`logging` when a message is first emitted (or any
attribute of the logger is asked for); the command line's logging set-up waits
for that moment too (:func:`defer_logging_setup`).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import contextlib
    import logging
    from collections.abc import Callable, Iterator, Mapping
    from types import ModuleType
    from typing import Any, ParamSpec, TypeVar

    _P = ParamSpec("_P")
    _T = TypeVar("_T")

__all__ = ["defer_logging_setup", "import_module", "lazy_attributes", "lazy_contextmanager",
           "lazy_logger"]


def import_module(name: str) -> ModuleType:
    """``importlib.import_module(name)`` for an absolute name, without importing
    :mod:`importlib`'s package (and the warnings it imports): the import statement's
    machinery, which is what it calls."""
    __import__(name)
    return sys.modules[name]


def lazy_attributes(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__``: ``names`` maps an attribute to the module that
    defines it under the same name; it is imported on first access and kept."""
    table = dict(names)

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__


#: the logging set-up waiting for :mod:`logging`'s first use (None: none waits)
_logging_setup: Callable[[ModuleType], None] | None = None


def defer_logging_setup(setup: Callable[[ModuleType], None]) -> None:
    """Run ``setup(logging)`` now if :mod:`logging` is imported already, else as soon
    as anyone imports it (a :func:`lazy_logger`'s first message, or a plugin's
    ``import logging``): what the ``vmforge`` command does with its ``basicConfig``,
    so a command that logs nothing never imports logging."""
    global _logging_setup
    if "logging" in sys.modules:
        _logging_setup = None
        setup(sys.modules["logging"])
        return
    _logging_setup = setup
    if _SetUpOnImport not in sys.meta_path:
        sys.meta_path.insert(0, _SetUpOnImport)


def _run_logging_setup(logging: ModuleType) -> None:
    global _logging_setup
    setup, _logging_setup = _logging_setup, None
    if setup is not None:
        setup(logging)


class _SetUpOnImport:
    """A finder on ``sys.meta_path`` (once) that finds :mod:`logging` as the path
    finder does and runs the waiting set-up right after the module has run."""

    @staticmethod
    def find_spec(name: str, path: Any = None, target: Any = None) -> Any:
        if name != "logging":
            return None
        sys.meta_path.remove(_SetUpOnImport)
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            del loader.exec_module          # (the instance's: the class's again)
            _run_logging_setup(module)

        loader.exec_module = exec_module
        return spec


class _LazyLogger:
    __slots__ = ("logger", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.logger: Any = None

    def __getattr__(self, attr: str) -> Any:     # the logger's attributes (not name/logger)
        return getattr(self._logger(), attr)

    def _logger(self) -> Any:
        logger = self.logger
        if logger is None:
            import logging

            _run_logging_setup(logging)     # (done already, unless it was imported before)
            logger = self.logger = logging.getLogger(self.name)
        return logger

    # Debug and info messages before logging is imported reach no one: only an
    # importer of logging can have set a level below the root's WARNING or a handler
    # (the command line sets up -v at once).  They are dropped without importing it.
    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.logger is not None or "logging" in sys.modules:
            self._logger().debug(msg, *args, **kwargs)

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.logger is not None or "logging" in sys.modules:
            self._logger().info(msg, *args, **kwargs)


def lazy_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)``, made (and :mod:`logging` imported) on first use."""
    return _LazyLogger(name)  # type: ignore[return-value]   # a stand-in with its methods


def lazy_contextmanager(func: Callable[_P, Iterator[_T]]
                        ) -> Callable[_P, contextlib.AbstractContextManager[_T]]:
    """``contextlib.contextmanager(func)``, with :mod:`contextlib` (and the functools it
    imports) imported at the first call instead of at the definition: for a method
    most commands never call (a block backend's drained section)."""
    made: Callable[_P, contextlib.AbstractContextManager[_T]] | None = None

    def call(*args: _P.args, **kwargs: _P.kwargs) -> contextlib.AbstractContextManager[_T]:
        nonlocal made
        if made is None:
            import contextlib

            made = contextlib.contextmanager(func)
        return made(*args, **kwargs)

    for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(call, attr, getattr(func, attr))
    call.__wrapped__ = func  # type: ignore[attr-defined]
    return call
