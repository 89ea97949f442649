"""The block layer: what a disk-format plugin implements, and how images open.

- :mod:`vmforge.block.driver`: :class:`BlockDriver` (the API a format
  implements), :class:`Extent` and :class:`BlockStatus` (``block_status``),
  :class:`CreateOption` (:class:`OptionValueError` when it refuses a value),
  :class:`CheckResult`, the errors.
- :mod:`vmforge.block.backend`: :class:`BlockBackend`, an image opened with its
  backing chain, locked like QEMU's (:mod:`vmforge.block.locking`), its format
  named or probed (:mod:`vmforge.block.probe`).
- :mod:`vmforge.block.ops`: whole-image operations behind ``vmforge img``
  (convert, compare, commit, rebase).
"""

from vmforge.block.backend import (
    CACHE_MODES,
    MAX_CHAIN_DEPTH,
    BlockBackend,
    Layer,
    create_image,
    resolve_backing,
)
from vmforge.block.driver import (
    BLOCK_API_VERSION,
    BlockDriver,
    BlockError,
    BlockRangeError,
    BlockStatus,
    CheckResult,
    CorruptImageError,
    CreateOption,
    Extent,
    ImageInfo,
    KeyRequired,
    OptionValueError,
    ReadOnlyError,
    SnapshotInfo,
    UnsupportedOperation,
    parse_size,
)
from vmforge.block.locking import ImageLock, LockedError
from vmforge.block.probe import driver_class, format_names, probe_format

__all__ = [
    "BLOCK_API_VERSION",
    "CACHE_MODES",
    "MAX_CHAIN_DEPTH",
    "BlockBackend",
    "BlockDriver",
    "BlockError",
    "BlockRangeError",
    "BlockStatus",
    "CheckResult",
    "CorruptImageError",
    "CreateOption",
    "Extent",
    "ImageInfo",
    "ImageLock",
    "KeyRequired",
    "Layer",
    "LockedError",
    "OptionValueError",
    "ReadOnlyError",
    "SnapshotInfo",
    "UnsupportedOperation",
    "create_image",
    "driver_class",
    "format_names",
    "parse_size",
    "probe_format",
    "resolve_backing",
]
