"""The parallels format's probe, in a light module of its own: vmforge asks every
installed format's probe when it guesses an image's format (entry point group
``vmforge.block.probe``), without importing the drivers (start-up time)."""

from __future__ import annotations

__all__ = ["MAGIC_EXT", "MAGIC_OLD", "probe"]

MAGIC_EXT = b"WithouFreSpacExt"
MAGIC_OLD = b"WithoutFreeSpace"


def probe(header: bytes, filename: str) -> int:
    if header[:16] in (MAGIC_EXT, MAGIC_OLD) and header[16:20] == b"\2\0\0\0":
        return 100
    return 0
