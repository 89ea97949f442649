"""Cloop images built from the format's layout, for the tests and the conformance kit."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

MAGIC = (b"#!/bin/sh\n#V2.0 Format\n"
         b"modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n")


def build_cloop(path: str | Path, data: bytes | bytearray, block_size: int = 65536,
                level: int = 6) -> None:
    """Write ``data`` as a cloop 2.0 image (the layout in QEMU's block/cloop.c): the
    shell header padded to 128 bytes, the block size and count, n+1 offsets, then
    each block as a zlib stream.  A short last block is padded with zeros."""
    n = -(-len(data) // block_size)
    blocks = [zlib.compress(bytes(data[i * block_size:(i + 1) * block_size])
                            .ljust(block_size, b"\0"), level) for i in range(n)]
    at = 128 + 8 + 8 * (n + 1)
    offsets = [at]
    for blk in blocks:
        offsets.append(offsets[-1] + len(blk))
    with open(path, "wb") as f:
        f.write(MAGIC.ljust(128, b"\0") + struct.pack(">II", block_size, n))
        f.write(struct.pack(f">{n + 1}Q", *offsets) + b"".join(blocks))

