"""Dirty bitmaps: which parts of a disk were written since a point in time.

A :class:`DirtyBitmap` holds one bit per ``granularity`` bytes of a disk (a
power of two, as QEMU's ``BdrvDirtyBitmap``).  Attached to a
:class:`~vmforge.block.backend.BlockBackend` (``backend.add_dirty_bitmap``),
every write path marks the chunks it touched once the data has landed; the
block jobs (:mod:`vmforge.block.jobs`) copy what is dirty and clear it first.

An image's persistent bitmaps (qcow2's) are loaded when a backend opens it
read-write and stored back when it closes it (:func:`load_persistent`,
:func:`store_persistent`), as QEMU does.

Bits are kept in a ``bytearray``, bit ``i`` in byte ``i // 8`` at ``1 << (i % 8)``
(the order of qcow2's persistent bitmaps); runs are found with C-speed scans
of the bytes, so a bitmap of millions of chunks iterates quickly.  All
methods take the bitmap's lock: writers on I/O threads and a job thread may
use one bitmap at once.
"""

from __future__ import annotations

from _thread import allocate_lock

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

__all__ = ["DirtyBitmap", "load_persistent", "store_persistent"]

#: (a byte not 0, a byte not 0xff): compiled on first use (re: ~8 ms of start-up)
_BYTE_PATTERNS: tuple[Any, Any] | None = None


def _byte_patterns() -> tuple[Any, Any]:
    global _BYTE_PATTERNS
    if _BYTE_PATTERNS is None:
        import re

        _BYTE_PATTERNS = (re.compile(rb"[^\x00]"), re.compile(rb"[^\xff]"))
    return _BYTE_PATTERNS


class DirtyBitmap:
    """One bit per ``granularity`` bytes of a disk of ``size`` bytes."""

    def __init__(self, size: int, granularity: int = 65536, name: str | None = None) -> None:
        if granularity < 1 or granularity & (granularity - 1):
            raise ValueError(f"granularity must be a power of 2, not {granularity}")
        if size < 0:
            raise ValueError("size must not be negative")
        self.granularity = granularity
        self.name = name
        #: a disabled bitmap ignores writes (QEMU's block-dirty-bitmap-disable)
        self.enabled = True
        self._shift = granularity.bit_length() - 1
        self._size = size
        self._bits = bytearray(-(-self.chunks // 8))
        self._lock = allocate_lock()

    # -- geometry ----------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    @property
    def chunks(self) -> int:
        """How many bits: chunks of the disk, the last one maybe short."""
        return -(-self._size >> self._shift)

    def _span(self, offset: int, length: int) -> tuple[int, int]:
        """The bits ``[first, last)`` covering ``[offset, offset+length)``, clipped."""
        if offset < 0 or length < 0:
            raise ValueError(f"bad range: offset {offset}, length {length}")
        end = min(offset + length, self._size)
        if end <= offset:
            return 0, 0
        return offset >> self._shift, ((end - 1) >> self._shift) + 1

    # -- changing ----------------------------------------------------------------------

    def set(self, offset: int, length: int) -> None:
        """Mark every chunk the range touches dirty."""
        a, b = self._span(offset, length)
        if a < b:
            with self._lock:
                self._fill(a, b, True)

    def mark(self, offset: int, length: int) -> None:
        """:meth:`set` if the bitmap is enabled (what a write does)."""
        if self.enabled:
            self.set(offset, length)

    def clear(self, offset: int, length: int) -> None:
        """Mark every chunk the range touches clean (jobs pass whole chunks)."""
        a, b = self._span(offset, length)
        if a < b:
            with self._lock:
                self._fill(a, b, False)

    def set_all(self) -> None:
        self.set(0, self._size)

    def clear_all(self) -> None:
        with self._lock:
            self._bits[:] = bytes(len(self._bits))

    def resize(self, size: int) -> None:
        """Change the disk size; new chunks are clean, a cut one keeps its bit."""
        with self._lock:
            old = self.chunks
            self._size = size
            n = self.chunks
            if n < old:
                self._fill(n, old, False)
            nbytes = -(-n // 8)
            if nbytes < len(self._bits):
                del self._bits[nbytes:]
            else:
                self._bits.extend(bytes(nbytes - len(self._bits)))

    def merge(self, other: DirtyBitmap) -> None:
        """Add ``other``'s dirty ranges (any granularity) to this bitmap."""
        for off, length in other.dirty_runs():
            self.set(off, length)

    def _fill(self, a: int, b: int, value: bool) -> None:
        bits = self._bits
        while a < b and a & 7:          # the head, bit by bit
            self._put(a, value)
            a += 1
        full = b & ~7
        if a < full:                    # whole bytes
            bits[a >> 3:full >> 3] = (b"\xff" if value else b"\x00") * ((full - a) >> 3)
            a = full
        while a < b:                    # the tail
            self._put(a, value)
            a += 1

    def _put(self, i: int, value: bool) -> None:
        if value:
            self._bits[i >> 3] |= 1 << (i & 7)
        else:
            self._bits[i >> 3] &= ~(1 << (i & 7)) & 0xFF

    # -- reading -----------------------------------------------------------------------

    def get(self, offset: int) -> bool:
        """Whether the chunk holding ``offset`` is dirty."""
        i = offset >> self._shift
        if offset < 0 or offset >= self._size:
            return False
        return bool(self._bits[i >> 3] >> (i & 7) & 1)

    def is_dirty(self, offset: int, length: int) -> bool:
        """Whether any chunk the range touches is dirty."""
        a, b = self._span(offset, length)
        with self._lock:
            return a < b and self._next_set(a, b) < b

    def count(self) -> int:
        """Dirty bytes (whole chunks; the last one as long as the disk has)."""
        with self._lock:
            n = int.from_bytes(self._bits, "little").bit_count()
            last = self.chunks - 1
            if n and self._bits[last >> 3] >> (last & 7) & 1:
                return (n - 1) * self.granularity + self._size - (last << self._shift)
            return n * self.granularity

    def next_dirty(self, offset: int = 0, max_length: int | None = None
                   ) -> tuple[int, int] | None:
        """The first dirty run at or after ``offset`` as ``(offset, length)`` in bytes
        (at most ``max_length``, a whole number of chunks), or None."""
        n = self.chunks
        with self._lock:
            a = self._next_set(max(0, offset) >> self._shift, n)
            if a >= n:
                return None
            b = self._next_clear(a, n)
        if max_length is not None:
            b = min(b, a + max(1, max_length >> self._shift))
        start = a << self._shift
        return start, min(b << self._shift, self._size) - start

    def dirty_runs(self, offset: int = 0, length: int | None = None
                   ) -> Iterator[tuple[int, int]]:
        """``(offset, length)`` of each run of dirty chunks meeting the range, in order
        (whole chunks, clipped to the disk)."""
        end = self._size if length is None else min(self._size, offset + length)
        pos = offset
        while pos < end:
            run = self.next_dirty(pos)
            if run is None or run[0] >= end:
                return
            yield run
            pos = run[0] + run[1]

    def _next_set(self, a: int, b: int) -> int:
        """The first set bit in ``[a, b)``, or ``b``."""
        return self._next(a, b, True)

    def _next_clear(self, a: int, b: int) -> int:
        """The first clear bit in ``[a, b)``, or ``b``."""
        return self._next(a, b, False)

    def _next(self, a: int, b: int, value: bool) -> int:
        bits = self._bits
        while a < b and a & 7:            # bit by bit up to a byte boundary
            if bool(bits[a >> 3] >> (a & 7) & 1) == value:
                return a
            a += 1
        if a >= b:
            return b
        m = _byte_patterns()[not value].search(bits, a >> 3)   # then whole bytes
        if m is None:
            return b
        byte = bits[m.start()] if value else ~bits[m.start()] & 0xFF
        return min((m.start() << 3) + (byte & -byte).bit_length() - 1, b)

    @classmethod
    def from_bytes(cls, bits: bytes, size: int, granularity: int,
                   name: str | None = None) -> DirtyBitmap:
        """A bitmap from its bits as :meth:`to_bytes` gives them (a qcow2 bitmap's)."""
        bm = cls(size, granularity, name)
        n = len(bm._bits)
        bm._bits[:] = bits[:n].ljust(n, b"\0")
        if bm.chunks % 8:            # (bits past the disk's last chunk: none)
            bm._bits[-1] &= (1 << bm.chunks % 8) - 1
        return bm

    def to_bytes(self) -> bytes:
        """The bits, as qcow2 stores a bitmap's table (bit i of byte i // 8)."""
        with self._lock:
            return bytes(self._bits)

    def __repr__(self) -> str:
        return (f"<DirtyBitmap {self.name or ''} granularity={self.granularity} "
                f"dirty={self.count()}/{self._size}>")


def load_persistent(driver: Any) -> list[DirtyBitmap]:
    """The enabled persistent bitmaps of an image opened read-write, marked in use in
    the image while they are tracked (QEMU's qcow2_load_dirty_bitmaps).  A bitmap
    already in use (left so by a crash: inconsistent) or disabled stays as it is.
    A format without persistent bitmaps has none."""
    if driver.readonly or not hasattr(driver, "set_bitmaps_in_use"):
        return []
    out = []
    for info in driver.bitmaps():
        if "in-use" in info["flags"] or "auto" not in info["flags"]:
            continue
        bits, granularity = driver.bitmap_bits(info["name"])
        out.append(DirtyBitmap.from_bytes(bits, driver.size, granularity, info["name"]))
    if out:
        driver.set_bitmaps_in_use([bm.name for bm in out], True)
        driver.bitmaps_tracked = True
    return out


def store_persistent(driver: Any, bitmaps: list[DirtyBitmap]) -> None:
    """Write tracked bitmaps back into their image and clear their in-use flag (QEMU's
    qcow2_store_persistent_dirty_bitmaps, on close)."""
    if not bitmaps:
        return
    for bm in bitmaps:
        driver.clear_bitmap(bm.name)
        driver.merge_bitmap(bm.name, bm.to_bytes(), bm.granularity)
    driver.set_bitmaps_in_use([bm.name for bm in bitmaps], False)
    driver.bitmaps_tracked = False
