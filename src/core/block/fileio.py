"""Vectored file I/O that finishes the job: what every file-backed driver needs.

``os.preadv``/``os.pwritev`` may move fewer bytes than asked (a signal, a
pipe, a full disk's last block) and take at most ``IOV_MAX`` buffers; these
loop until everything moved.  A read that meets the end of the file fills the
rest with zeros (a sparse image's tail, a file that shrank).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

TYPE_CHECKING = False
if TYPE_CHECKING:
    import mmap

__all__ = ["IOV_MAX", "fill_zero", "padded", "page_aligned_buffer", "preadv_full",
           "pwritev_full", "zero_views"]

IOV_MAX = 1024
_ZEROS = memoryview(bytes(1 << 20))


def fill_zero(mv: memoryview) -> None:
    """Zero a writable byte memoryview without allocating per call."""
    n = mv.nbytes
    pos = 0
    while pos < n:
        k = min(n - pos, len(_ZEROS))
        mv[pos:pos + k] = _ZEROS[:k]
        pos += k


def zero_views(n: int) -> list[memoryview]:
    """Views of a shared buffer of zeros, ``n`` bytes in all (for vectored writes)."""
    out = []
    while n > 0:
        k = min(n, len(_ZEROS))
        out.append(_ZEROS[:k])
        n -= k
    return out


def padded(size: int, within: int, data: memoryview) -> list[memoryview]:
    """``size`` bytes to write in one vectored call: zeros, ``data`` at ``within``,
    zeros after it; no copy of ``data`` (what a new cluster holds around a write)."""
    return [*zero_views(within), data, *zero_views(size - within - data.nbytes)]


def page_aligned_buffer(size: int) -> mmap.mmap:
    """A writable buffer of ``size`` zero bytes that starts on a page boundary, its
    pages made when first touched.

    What big reads and writes should use: a ``bytearray``'s data is only 16-byte
    aligned, and the kernel's copy into memory that is not 32-byte aligned made
    2 MiB reads from tmpfs ~3x slower (AMD EPYC: 0.35 s against 0.11 s for
    512 MiB); and nothing is zeroed up front (``bytearray(n)`` writes all ``n``
    bytes).
    """
    import mmap  # here, not at start-up: few commands need one

    return mmap.mmap(-1, size)


def _advance(bufs: list[memoryview], n: int) -> list[memoryview]:
    """Drop the first ``n`` bytes of a buffer list."""
    i = 0
    while i < len(bufs) and n >= bufs[i].nbytes:
        n -= bufs[i].nbytes
        i += 1
    rest = bufs[i:]
    if rest and n:
        rest[0] = rest[0][n:]
    return rest


def preadv_full(fd: int, offset: int, bufs: Sequence[memoryview]) -> int:
    """Fill ``bufs`` from ``offset``; bytes past the end of the file read as zeros.

    Returns how many bytes came from the file.
    """
    todo = [memoryview(b).cast("B") for b in bufs]
    pos = offset
    while todo:
        n = os.preadv(fd, todo[:IOV_MAX], pos)
        if n == 0:  # end of file
            for b in todo:
                fill_zero(b)
            break
        pos += n
        todo = _advance(todo, n)
    return pos - offset


def pwritev_full(fd: int, offset: int, bufs: Sequence[memoryview]) -> int:
    """Write ``bufs`` contiguously at ``offset``; returns the end position."""
    todo = [memoryview(b).cast("B") for b in bufs]
    pos = offset
    while todo:
        n = os.pwritev(fd, todo[:IOV_MAX], pos)
        pos += n
        todo = _advance(todo, n)
    return pos
