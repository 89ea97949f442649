"""The cloop format driver: compressed loop images (cloop 2.0), read-only.

Layout (big-endian), as QEMU's ``block/cloop.c`` reads it::

    0       a shell script ("#!/bin/sh", "#V2.0 Format", a modprobe line),
            padded to 128 bytes
    128     block size (u32, a multiple of 512), number of blocks n (u32)
    136     n + 1 offsets (u64): block i is the zlib stream in
            [offset[i], offset[i+1]), inflating to exactly one block
    ...     the compressed blocks

The disk is n blocks long.  qemu-img cannot create these images and neither
does vmforge.
"""

from __future__ import annotations

import os
import struct
import sys
import zlib
from array import array
from collections.abc import Iterator, Sequence

from vmforge.block.driver import (
    BlockError,
    BlockStatus,
    CorruptImageError,
    Extent,
    ReadOnlyError,
)
from vmforge.block.mapped import FileImage, open_image_file, split_views
from vmforge_cloop.probe import MAGIC
from vmforge_cloop.probe import probe as _probe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Self

HEADER_SIZE = 128
#: QEMU's limits: 64 MiB blocks, 512 MiB of offsets, compressed blocks of 128 MiB
MAX_BLOCK_SIZE = 64 << 20
MAX_OFFSETS_BYTES = 512 << 20
MAX_COMPRESSED = 2 * MAX_BLOCK_SIZE

_STATUS = BlockStatus.DATA | BlockStatus.ALLOCATED | BlockStatus.COMPRESSED


class Cloop(FileImage):
    """A cloop image (read-only)."""

    format_name = "cloop"
    granularity = 512

    def __init__(self, filename: str, fd: int, block_size: int, offsets: array[int]) -> None:
        super().__init__(filename, True, fd)
        self.block_size = block_size
        self.granularity = block_size
        self.offsets = offsets
        self.n_blocks = len(offsets) - 1
        self._file_size = os.fstat(fd).st_size
        self._cache: tuple[int, bytes] | None = None

    @classmethod
    def probe(cls, header: bytes, filename: str) -> int:
        return _probe(header, filename)

    @classmethod
    def open(cls, path: str, *, readonly: bool = True, **options: Any) -> Self:
        if not readonly:
            raise ReadOnlyError("the cloop format can only be opened read-only", path)
        with open_image_file(path, True) as fd:
            return cls._open_fd(path, fd)

    @classmethod
    def _open_fd(cls, path: str, fd: int) -> Self:
        raw = os.pread(fd, HEADER_SIZE + 8, 0)
        if raw[:len(MAGIC)] != MAGIC:
            raise BlockError("not a cloop image (no 'V2.0 Format' header)", path)
        if len(raw) < HEADER_SIZE + 8:
            raise CorruptImageError(f"header truncated to {len(raw)} bytes", path, 0, "header")
        block_size, n = struct.unpack_from(">II", raw, HEADER_SIZE)
        if block_size == 0 or block_size % 512 or block_size > MAX_BLOCK_SIZE:
            raise CorruptImageError(f"block size {block_size} must be a non-zero multiple of "
                                    f"512 of at most {MAX_BLOCK_SIZE >> 20} MiB", path,
                                    HEADER_SIZE, "header")
        nbytes = 8 * (n + 1)
        if nbytes > MAX_OFFSETS_BYTES:
            raise CorruptImageError(f"{n} blocks need too many offsets; try increasing the "
                                    "block size", path, HEADER_SIZE + 4, "header")
        start = HEADER_SIZE + 8
        if start + nbytes > os.fstat(fd).st_size:
            raise CorruptImageError(f"the offsets of {n} blocks are past the end of the file",
                                    path, HEADER_SIZE + 4, "header")
        offsets = array("Q", os.pread(fd, nbytes, start))
        if len(offsets) != n + 1:
            raise CorruptImageError("offsets truncated", path, start, "offsets")
        if sys.byteorder == "little":
            offsets.byteswap()
        for i in range(1, n + 1):
            size = offsets[i] - offsets[i - 1]
            if size < 0:
                raise CorruptImageError(f"offsets not monotonically increasing at index {i}",
                                        path, start + 8 * i, "offsets")
            if size > MAX_COMPRESSED:
                raise CorruptImageError(f"invalid compressed block size {size} at index {i}",
                                        path, start + 8 * i, "offsets")
        return cls(path, fd, block_size, offsets)

    @property
    def size(self) -> int:
        return self.n_blocks * self.block_size

    def _block(self, i: int) -> bytes:
        """Block ``i``, inflated (the last one is cached)."""
        cached = self._cache
        if cached is not None and cached[0] == i:
            return cached[1]
        at, end = self.offsets[i], self.offsets[i + 1]
        where = HEADER_SIZE + 8 + 8 * i
        if end > self._file_size:
            raise CorruptImageError(f"block {i} at {at:#x}..{end:#x} is past the end of the "
                                    "file", self.filename, where, "offsets")
        try:
            d = zlib.decompressobj()
            out = d.decompress(os.pread(self.fd, end - at, at), self.block_size)
            complete = d.eof
        except zlib.error as exc:
            raise CorruptImageError(f"block {i} at {at:#x} does not inflate: {exc}",
                                    self.filename, where, "offsets") from None
        if len(out) != self.block_size or not complete:
            raise CorruptImageError(f"block {i} at {at:#x} inflates to {len(out)} bytes, not "
                                    f"a whole stream of {self.block_size}", self.filename,
                                    where, "offsets")
        self._cache = (i, out)
        return out

    def preadv(self, offset: int, buffers: Sequence[memoryview]) -> None:
        views = self._checked_views(offset, buffers)
        with self._lock:   # (the inflated block's cache)
            for i, within, part in split_views(offset, views, self.block_size):
                part[:] = self._block(i)[within:within + part.nbytes]

    def block_status(self, offset: int, length: int) -> Iterator[Extent]:
        self._check_range(offset, length)
        if length:
            yield Extent(offset, length, _STATUS, None, 0, self.filename)

