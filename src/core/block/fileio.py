"""Vectored file I/O that finishes the job: what every file-backed driver needs.

``os.preadv``/``os.pwritev`` may move fewer bytes than asked (a signal, a
pipe, a full disk's last block) and take at most ``IOV_MAX`` buffers; these
loop until everything moved.  A read that meets the end of the file fills the
rest with zeros (a sparse image's tail, a file that shrank).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["IOV_MAX", "fill_zero", "preadv_full", "pwritev_full"]

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
