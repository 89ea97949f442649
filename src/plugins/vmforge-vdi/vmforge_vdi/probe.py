"""The vdi format's probe, in a light module of its own: vmforge asks every
installed format's probe when it guesses an image's format (entry point group
``vmforge.block.probe``), without importing the drivers (start-up time)."""

from __future__ import annotations

import struct

__all__ = ["HEADER_SIZE", "SIGNATURE", "probe"]

SIGNATURE = 0xBEDA107F
#: the header's size (``vmforge_vdi.driver._HEADER``, which the driver checks)
HEADER_SIZE = 512


def probe(header: bytes, filename: str) -> int:
    if len(header) < HEADER_SIZE:
        return 0
    return 100 if struct.unpack_from("<I", header, 0x40)[0] == SIGNATURE else 0
