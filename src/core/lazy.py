"""Attributes of a package imported on first use (PEP 562), for start-up time.

A format plugin's package names its driver class (the entry point
``vmforge_x:X``) but must not import the driver with the package: probing
imports ``vmforge_x.probe`` alone (see :mod:`vmforge.block.probe`)::

    # vmforge_x/__init__.py
    from vmforge.lazy import lazy_attributes

    __all__ = ["X"]
    __getattr__ = lazy_attributes(__name__, {"X": "vmforge_x.driver"})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__``: ``names`` maps an attribute to the module that
    defines it under the same name; it is imported on first access and kept."""
    table = dict(names)

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
