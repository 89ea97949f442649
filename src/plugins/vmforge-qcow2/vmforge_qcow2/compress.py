"""Compressed clusters: raw deflate (zlib, wbits -12) or zstd, and the L2 descriptor.

A compressed cluster's L2 entry holds a byte offset (not cluster aligned) in
bits ``0..x-1`` and the number of additional 512-byte sectors in bits
``x..61``, with ``x = 62 - (cluster_bits - 8)``.
"""

from __future__ import annotations

import zlib

from vmforge.block import CorruptImageError

from .l2 import OFLAG_COMPRESSED

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SECTOR = 512


class CompressedLayout:
    """Encode and decode compressed descriptors for one cluster size."""

    def __init__(self, cluster_bits: int) -> None:
        self.cluster_bits = cluster_bits
        self.cs = 1 << cluster_bits
        self.shift = 62 - (cluster_bits - 8)
        self.offset_mask = (1 << self.shift) - 1
        self.sectors_mask = (1 << (cluster_bits - 8)) - 1

    def decode(self, ent: int) -> tuple[int, int]:
        """``(host offset, csize)``: where the data starts and how many bytes to read."""
        off = ent & self.offset_mask & ((1 << 56) - 1)
        nb = ((ent >> self.shift) & self.sectors_mask) + 1
        return off, nb * SECTOR - (off & (SECTOR - 1))

    def encode(self, host: int, clen: int) -> int:
        extra = ((host + clen - 1) >> 9) - (host >> 9)
        return OFLAG_COMPRESSED | extra << self.shift | host

    def clusters(self, ent: int) -> tuple[int, int]:
        """First host cluster and number of clusters a compressed entry references."""
        off, csize = self.decode(ent)
        c0 = off >> self.cluster_bits
        c1 = (off + csize - 1) >> self.cluster_bits
        return c0, c1 - c0 + 1


ZLIB, ZSTD = 0, 1


def zstd_module() -> Any:
    """The ``zstandard`` package, or None (zstd clusters need it)."""
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard


def compress_cluster(data: bytes | memoryview, cluster_size: int,
                     ctype: int = ZLIB) -> bytes | None:
    """Compress one cluster like QEMU: raw deflate (level default, wbits -12,
    memLevel 9), or one zstd frame (level 3).

    Returns None when compression does not save anything (QEMU then writes
    the cluster uncompressed).
    """
    if ctype == ZSTD:
        out = zstd_module().ZstdCompressor(level=3).compress(data)
    else:
        c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -12, 9)
        out = c.compress(data) + c.flush()
    if len(out) >= cluster_size:
        return None
    return out


def decompress_cluster(raw: bytes, cluster_size: int, filename: str, host: int,
                       ctype: int = ZLIB) -> bytes:
    """Inflate one compressed cluster; anything but a full cluster is corruption."""
    try:
        if ctype == ZSTD:
            zstd = zstd_module()
            try:
                out = zstd.ZstdDecompressor().decompressobj().decompress(raw)[:cluster_size]
            except zstd.ZstdError as e:
                raise zlib.error(str(e)) from None
        else:
            d = zlib.decompressobj(-12)
            out = d.decompress(raw, cluster_size)
    except zlib.error as e:
        raise CorruptImageError(f"compressed cluster does not inflate: {e}", filename, host,
                                "compressed cluster") from None
    if len(out) != cluster_size:
        raise CorruptImageError(f"compressed cluster inflates to {len(out)} bytes, not "
                                f"{cluster_size}", filename, host, "compressed cluster")
    return out
