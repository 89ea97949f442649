"""The block layer: what a disk-format plugin implements, and how images open.

- :mod:`vmforge.block.driver`: :class:`BlockDriver` (the API a format
  implements), :class:`Extent` and :class:`BlockStatus` (``block_status``),
  :class:`CreateOption`, :class:`CheckResult`, the errors.
"""

from vmforge.block.driver import (
    BLOCK_API_VERSION,
    BlockDriver,
    BlockError,
    BlockStatus,
    CheckResult,
    CorruptImageError,
    CreateOption,
    Extent,
    ImageInfo,
    UnsupportedOperation,
)

__all__ = [
    "BLOCK_API_VERSION",
    "BlockDriver",
    "BlockError",
    "BlockStatus",
    "CheckResult",
    "CorruptImageError",
    "CreateOption",
    "Extent",
    "ImageInfo",
    "UnsupportedOperation",
]
