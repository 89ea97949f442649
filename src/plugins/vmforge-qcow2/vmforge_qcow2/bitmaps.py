"""Persistent dirty bitmaps (docs/interop/qcow2.txt, "Bitmaps"): the bitmaps
header extension, the bitmap directory, bitmap tables and their data clusters,
and the ``bitmaps`` autoclear bit that says the extension is valid.

vmforge does not track guest writes in bitmaps.  It follows the spec's
autoclear rule instead: the first write to an image clears the autoclear bit
(``Qcow2Writer._begin_write``), so after vmforge wrote guest data QEMU
considers the bitmaps inconsistent rather than silently wrong.  The
operations here (``qemu-img bitmap``'s) change no guest data.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from vmforge.block import BlockError

from .header import AUTOCLEAR_BITMAPS, EXT_BITMAPS, Extension

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .driver import Qcow2

FLAG_IN_USE = 1
FLAG_AUTO = 2
TYPE_DIRTY = 1
TABLE_OFFSET_MASK = 0x00FFFFFFFFFFFE00
MAX_NAME = 1023
_ENTRY = struct.Struct(">QIIBBHI")


@dataclass
class Bitmap:
    """One bitmap directory entry."""

    name: str
    table_offset: int
    table_size: int
    flags: int
    granularity_bits: int
    type: int = TYPE_DIRTY
    extra: bytes = b""

    @property
    def granularity(self) -> int:
        return 1 << self.granularity_bits

    def pack(self) -> bytes:
        name = self.name.encode()
        raw = _ENTRY.pack(self.table_offset, self.table_size, self.flags, self.type,
                          self.granularity_bits, len(name), len(self.extra)) + self.extra + name
        return raw + bytes(-len(raw) % 8)

    def to_info(self) -> dict[str, Any]:
        """As ``qemu-img info`` lists it."""
        return {"flags": [f for bit, f in ((FLAG_IN_USE, "in-use"), (FLAG_AUTO, "auto"))
                          if self.flags & bit],
                "name": self.name, "granularity": self.granularity}


def read_directory(img: Qcow2) -> list[Bitmap]:
    """The bitmaps, when the extension is there and valid (else none)."""
    h = img.h
    ext = h.ext(EXT_BITMAPS)
    if ext is None or not h.autoclear_features & AUTOCLEAR_BITMAPS or len(ext.data) < 24:
        return []
    nb, _, dir_size, dir_off = struct.unpack_from(">IIQQ", ext.data)
    raw = img.f.read_table(dir_off, min(dir_size, 64 << 20), "bitmap directory")
    out: list[Bitmap] = []
    pos = 0
    for _ in range(nb):
        if pos + _ENTRY.size > len(raw):
            break
        t_off, t_size, flags, typ, gbits, name_len, extra = _ENTRY.unpack_from(raw, pos)
        start = pos + _ENTRY.size
        name = raw[start + extra:start + extra + name_len].decode("utf-8", "replace")
        out.append(Bitmap(name, t_off & TABLE_OFFSET_MASK, t_size, flags, min(gbits, 63),
                          typ, raw[start:start + extra]))
        size = _ENTRY.size + extra + name_len
        pos += size + (-size % 8)
    return out


def _table_entries(img: Qcow2, gbits: int) -> int:
    bits = -(-img.size // (1 << gbits))
    return -(-bits // (img.cs * 8))


def _read_table(img: Qcow2, bm: Bitmap) -> list[int]:
    if not bm.table_size:
        return []
    raw = img.f.read_table(bm.table_offset, 8 * bm.table_size, f"bitmap table of {bm.name}")
    return list(struct.unpack(f">{bm.table_size}Q", raw))


def _free_data(img: Qcow2, table: list[int]) -> None:
    for ent in table:
        off = ent & TABLE_OFFSET_MASK
        if off:
            img.refs.free(off, img.cs)


def _write_directory(img: Qcow2, bitmaps: list[Bitmap]) -> None:
    """A new directory, switched to in one header write; the old one freed."""
    h = img.h
    old = h.ext(EXT_BITMAPS)
    old_dir = struct.unpack_from(">IIQQ", old.data) if old is not None and \
        len(old.data) >= 24 else None
    exts = [e for e in h.extensions if e.type != EXT_BITMAPS]
    if bitmaps:
        raw = b"".join(b.pack() for b in bitmaps)
        ncl = -(-len(raw) // img.cs)
        off = img.refs.alloc(ncl)
        img.f.pwrite(off, raw + bytes(ncl * img.cs - len(raw)))
        exts.append(Extension(EXT_BITMAPS, struct.pack(">IIQQ", len(bitmaps), 0, len(raw),
                                                       off)))
        h.autoclear_features |= AUTOCLEAR_BITMAPS
    else:
        h.autoclear_features &= ~AUTOCLEAR_BITMAPS
    h.extensions = exts
    img.f.sync()
    img.f.pwrite(0, h.pack())
    img.f.sync()
    if old_dir is not None and old_dir[2]:
        img.refs.free(old_dir[3], old_dir[2])


def _find(bitmaps: list[Bitmap], name: str) -> Bitmap:
    for b in bitmaps:
        if b.name == name:
            return b
    raise BlockError(f"Dirty bitmap '{name}' not found")


def _check_usable(img: Qcow2) -> None:
    img._check_writable()
    if img.h.version < 3:
        raise BlockError("Cannot store dirty bitmaps in qcow2 v2 files")


@contextmanager
def _editing(img: Qcow2) -> Iterator[list[Bitmap]]:
    """The directory, to change under the image's lock (metadata written back first)."""
    _check_usable(img)
    with img.lock:
        img._barrier()
        yield read_directory(img)


def add_bitmap(img: Qcow2, name: str, granularity: int | None = None,
               enabled: bool = True) -> None:
    """A new, empty persistent bitmap (``qemu-img bitmap --add``)."""
    with _editing(img) as bitmaps:
        if any(b.name == name for b in bitmaps):
            raise BlockError(f"Bitmap already exists: {name}")
        if not name or len(name.encode()) > MAX_NAME:
            raise BlockError(f"Bitmap name '{name}' must have 1 to {MAX_NAME} bytes")
        g = granularity if granularity is not None else min(max(img.cs, 4096), 65536)
        if g < 512 or g & (g - 1) or g > 1 << 31:
            raise BlockError("Granularity must be power of 2 and at least 512")
        gbits = g.bit_length() - 1
        n = _table_entries(img, gbits)
        toff = 0
        if n:
            ncl = -(-n * 8 // img.cs)
            toff = img.refs.alloc(ncl)
            img.f.pwrite(toff, bytes(ncl * img.cs))
        bitmaps.append(Bitmap(name, toff, n, FLAG_AUTO if enabled else 0, gbits))
        _write_directory(img, bitmaps)


def remove_bitmap(img: Qcow2, name: str) -> None:
    with _editing(img) as bitmaps:
        bm = _find(bitmaps, name)
        table = _read_table(img, bm)
        bitmaps.remove(bm)
        _write_directory(img, bitmaps)
        _free_data(img, table)
        if bm.table_size:
            img.refs.free(bm.table_offset, 8 * bm.table_size)


def clear_bitmap(img: Qcow2, name: str) -> None:
    with _editing(img) as bitmaps:
        bm = _find(bitmaps, name)
        table = _read_table(img, bm)
        if any(table):
            img.f.pwrite(bm.table_offset, bytes(8 * bm.table_size))
            img.f.sync()
            _free_data(img, table)
        _write_directory(img, bitmaps)


def set_in_use(img: Qcow2, names: list[str], in_use: bool) -> None:
    """Set or clear the in-use flag of the bitmaps named (QEMU sets it while an open
    tracks them, so that a crash leaves them marked inconsistent)."""
    with _editing(img) as bitmaps:
        for bm in bitmaps:
            if bm.name in names:
                bm.flags = (bm.flags | FLAG_IN_USE) if in_use else (bm.flags & ~FLAG_IN_USE)
        _write_directory(img, bitmaps)


def set_bitmap_enabled(img: Qcow2, name: str, enabled: bool) -> None:
    with _editing(img) as bitmaps:
        bm = _find(bitmaps, name)
        bm.flags = (bm.flags | FLAG_AUTO) if enabled else (bm.flags & ~FLAG_AUTO)
        _write_directory(img, bitmaps)


def bitmap_bits(img: Qcow2, name: str) -> bytes:
    """The bitmap's bits, one per granularity of the disk (bit i of byte i // 8,
    least significant first, as QEMU stores them)."""
    bm = _find(read_directory(img), name)
    nbits = -(-img.size // bm.granularity)
    out = bytearray()
    for ent in _read_table(img, bm):
        off = ent & TABLE_OFFSET_MASK
        if off:
            out += img.f.read_table(off, img.cs, f"bitmap {name} data")
        else:
            out += (b"\xff" if ent & 1 else b"\0") * img.cs
    return bytes(out[:-(-nbits // 8)])


def merge_bitmap(img: Qcow2, dst: str, src_bits: bytes, src_granularity: int) -> None:
    """OR ``src_bits`` (a bitmap of the same disk) into bitmap ``dst``."""
    with _editing(img) as bitmaps:
        bm = _find(bitmaps, dst)
        cur = bytearray(bitmap_bits(img, dst))
        if src_granularity != bm.granularity:
            src_bits = _regrain(src_bits, src_granularity, bm.granularity, len(cur))
        if len(src_bits) != len(cur):
            raise BlockError("Bitmaps are of different sizes")
        merged = bytes(a | b for a, b in zip(cur, src_bits, strict=True))
        table = _read_table(img, bm)
        new = []
        cs = img.cs
        for i, ent in enumerate(table):
            chunk = merged[i * cs:(i + 1) * cs]
            off = ent & TABLE_OFFSET_MASK
            if not any(chunk):
                new.append(0)
            else:
                if not off:
                    off = img.refs.alloc(1)
                img.f.pwrite(off, chunk + bytes(cs - len(chunk)))
                new.append(off)
        img.f.sync()
        if table:
            img.f.pwrite(bm.table_offset, struct.pack(f">{len(new)}Q", *new))
        for old, ent in zip(table, new, strict=True):
            if old & TABLE_OFFSET_MASK and not ent:
                img.refs.free(old & TABLE_OFFSET_MASK, cs)
        _write_directory(img, bitmaps)


def _regrain(bits: bytes, g_src: int, g_dst: int, nbytes: int) -> bytes:
    """The same dirty ranges at another granularity (a destination bit is set when
    any source bit overlapping it is)."""
    out = bytearray(nbytes)
    for byte_i, v in enumerate(bits):
        if not v:
            continue
        for k in range(8):
            if v >> k & 1:
                start = (byte_i * 8 + k) * g_src
                first, last = start // g_dst, (start + g_src - 1) // g_dst
                for d in range(first, min(last + 1, nbytes * 8)):
                    out[d // 8] |= 1 << (d % 8)
    return bytes(out)
