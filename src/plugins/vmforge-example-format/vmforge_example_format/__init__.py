"""vmforge-example-format: a tiny sparse disk format, the template for format plugins."""

# The driver is imported when first asked for (``vmforge_example_format.ExampleFormat``,
# as the entry point does), not with the package: probing imports the probe module alone.
from __future__ import annotations

from vmforge.lazy import lazy_attributes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from vmforge_example_format.driver import ExampleFormat

__all__ = ["ExampleFormat"]

__getattr__ = lazy_attributes(__name__, {
    "ExampleFormat": "vmforge_example_format.driver",
})
