"""Which pages of a RAM buffer the kernel holds at all (``mincore``), so a scan for
non-zero pages need not read (and so allocate) the pages a guest never touched.

Guest RAM is shared anonymous memory: a page nobody wrote is a hole that reads
as zeros, but reading it makes the kernel allocate it, so scanning a 4 GiB
guest for non-zero pages would make the host give it 4 GiB.  ``mincore``
says which pages exist.  With swap on, a page swapped out is not "resident"
though it holds data, so :func:`resident_runs` then says it cannot tell (None)
and the caller reads everything.
"""

from __future__ import annotations

import ctypes
import re
from typing import Any

__all__ = ["resident_runs"]

_PAGE = 4096
_ODD = bytes(i & 1 for i in range(256))       # mincore: bit 0 of each byte
_RUNS = re.compile(rb"\x01+")

_mincore: Any = None
try:
    _mincore = ctypes.CDLL(None, use_errno=True).mincore
    _mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
    _mincore.restype = ctypes.c_int
except (OSError, AttributeError):      # not Linux
    _mincore = None


def _swap_on() -> bool:
    try:
        with open("/proc/swaps") as f:
            return len(f.read().strip().splitlines()) > 1
    except OSError:
        return True


def resident_runs(view: memoryview) -> list[tuple[int, int]] | None:
    """``(offset, length)`` of the runs of pages of ``view`` that exist; None when
    that cannot be told (swap on, no ``mincore``, a view not of whole pages, a
    read-only one)."""
    n = len(view)
    if _mincore is None or view.readonly or n % _PAGE or _swap_on():
        return None
    anchor = ctypes.c_char.from_buffer(view)
    try:
        addr = ctypes.addressof(anchor)
        if addr % _PAGE:
            return None
        vec = (ctypes.c_ubyte * (n // _PAGE))()
        if _mincore(addr, n, vec) != 0:
            return None
    finally:
        del anchor
    flags = bytes(vec).translate(_ODD)
    return [(m.start() * _PAGE, (m.end() - m.start()) * _PAGE)
            for m in _RUNS.finditer(flags)]
