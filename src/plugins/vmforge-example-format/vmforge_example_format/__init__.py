"""vmforge-example-format: a tiny sparse disk format, the template for format plugins."""

# The driver is imported when first asked for (``vmforge_example_format.ExampleFormat``,
# as the entry point does), not with the package: probing imports the probe module alone.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmforge_example_format.driver import ExampleFormat

__all__ = ["ExampleFormat"]

_LAZY = {
    "ExampleFormat": "vmforge_example_format.driver",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
