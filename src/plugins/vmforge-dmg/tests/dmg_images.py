"""dmg test images from bytes, by vmforge's own writer (no Debian tool makes them)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from vmforge_dmg.layout import encode_image


def build_dmg(path: str | Path, data: bytes | bytearray, compression: str = "zlib",
              chunk_size: int = 65536, chunk_types: Callable[[int, bytes], int] | None = None,
              resource_fork: bool = False) -> None:
    """Write ``data`` (a multiple of 512 bytes) as a dmg image."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        encode_image(fd, len(data), lambda at, n: bytes(data[at:at + n]),
                     compression=compression, chunk_size=chunk_size,
                     chunk_types=chunk_types, resource_fork=resource_fork)
    finally:
        os.close(fd)
