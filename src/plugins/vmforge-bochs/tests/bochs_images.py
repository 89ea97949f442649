"""Bochs images built from the format's layout, for the tests and the conformance kit."""

from __future__ import annotations

import struct
from pathlib import Path

SECTOR = 512


def build_bochs(path: str | Path, data: bytes | bytearray, extent: int = 65536,
                version: int = 2, sparse_sectors: bool = True) -> None:
    """Write ``data`` as a Bochs growing image (the layout in QEMU's block/bochs.c).

    Extents that are all zeros are not stored; in stored ones, zero sectors get a
    clear bitmap bit (``sparse_sectors``) and hold junk, which must not be read.
    """
    size = len(data)
    entries = -(-size // extent)
    bitmap = (extent // SECTOR + 7) // 8
    bitmap_bytes = -(-bitmap // SECTOR) * SECTOR
    header = bytearray(512)
    struct.pack_into("<32s16s16sIIIII", header, 0, b"Bochs Virtual HD Image", b"Redolog",
                     b"Growing", 0x00020000 if version == 2 else 0x00010000, 512, entries,
                     bitmap, extent)
    struct.pack_into("<Q", header, 88 if version == 2 else 84, size)
    catalog, stored = [], bytearray()
    for i in range(entries):
        chunk = bytes(data[i * extent:(i + 1) * extent]).ljust(extent, b"\0")
        if not any(chunk):
            catalog.append(0xFFFFFFFF)
            continue
        bits = bytearray(bitmap_bytes)
        body = bytearray(chunk)
        for s in range(extent // SECTOR):
            sector = chunk[s * SECTOR:(s + 1) * SECTOR]
            if any(sector) or not sparse_sectors:
                bits[s // 8] |= 1 << (s % 8)
            else:
                body[s * SECTOR:(s + 1) * SECTOR] = b"\xa5" * SECTOR   # junk, unused
        catalog.append(len(stored) // (bitmap_bytes + extent))
        stored += bits + body
    with open(path, "wb") as f:
        f.write(header + struct.pack(f"<{entries}I", *catalog) + stored)

