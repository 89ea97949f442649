"""Guest RAM for saving and loading: the regions, and the pages worth sending.

:func:`ram_regions` lists a machine's writable RAM as ``(name, base, view)``
(ROMs are left out: the machine makes them again from its configuration).
:func:`nonzero_runs` splits a view into runs of pages that are not all zero
(a fresh machine's RAM reads as zeros, so zero pages need not travel; QEMU's
``RAM_SAVE_FLAG_ZERO``).  :func:`save_ram` / :func:`load_ram` put every
region into one checked section and back.
"""

from __future__ import annotations

import mmap
import struct
import zlib
from collections.abc import Iterator
from typing import Any

from vmforge._fast.zeroscan import zero_runs
from vmforge.migration.record import StateError
from vmforge.migration.resident import resident_runs

__all__ = ["PAGE_SIZE", "load_ram", "nonzero_runs", "ram_layout", "ram_regions", "save_ram"]

PAGE_SIZE = 4096
_MAGIC = b"VMFGRAM1"
_REGION = struct.Struct("<QQI")   # base, size, name length
_RUN = struct.Struct("<QQ")       # offset in the region, length (0, 0 ends a region)
_TAIL = struct.Struct("<I")       # crc32 of everything before it


def ram_regions(machine: Any) -> list[tuple[str, int, memoryview]]:
    """``(name, base, writable view)`` of each RAM region of ``machine``, by address."""
    return [(r.name, r.base, memoryview(r.buffer).cast("B"))
            for r in machine.space.memory.regions if not r.readonly]


def ram_layout(machine: Any) -> list[list[Any]]:
    """``[name, base, size]`` of each RAM region (what must match to load RAM)."""
    return [[name, base, len(view)] for name, base, view in ram_regions(machine)]


def nonzero_runs(view: memoryview, page: int = PAGE_SIZE) -> Iterator[tuple[int, int]]:
    """``(offset, length)`` of the runs of pages of ``view`` that are not all zero
    (pages the host never gave the guest are not read: :mod:`.resident`)."""
    spans = resident_runs(view) if page == PAGE_SIZE else None
    for base, size in spans if spans is not None else [(0, len(view))]:
        for start, end, is_zero in zero_runs(view[base:base + size], 0, page):
            if not is_zero:
                yield base + start, end - start


def save_ram(machine: Any) -> list[bytes | memoryview]:
    """Every RAM region's non-zero pages as a list of chunks (join or write them
    in order): a header per region, ``(offset, length)`` and the bytes per run,
    a CRC-32 of it all at the end."""
    chunks: list[bytes | memoryview] = [_MAGIC]
    crc = zlib.crc32(_MAGIC)
    regions = ram_regions(machine)

    def add(chunk: bytes | memoryview) -> None:
        nonlocal crc
        chunks.append(chunk)
        crc = zlib.crc32(chunk, crc)

    add(struct.pack("<I", len(regions)))
    for name, base, view in regions:
        raw = name.encode()
        add(_REGION.pack(base, len(view), len(raw)) + raw)
        for offset, length in nonzero_runs(view):
            add(_RUN.pack(offset, length))
            add(view[offset:offset + length])
        add(_RUN.pack(0, 0))
    chunks.append(_TAIL.pack(crc))
    return chunks


def check_ram(machine: Any, data: bytes | memoryview) -> list[tuple[memoryview, int,
                                                                   memoryview]]:
    """Parse and check a :func:`save_ram` section against ``machine``'s RAM without
    touching it: ``(region view, offset, bytes)`` of each run to copy."""
    mv = memoryview(data).cast("B")
    if len(mv) < len(_MAGIC) + 8 or bytes(mv[:len(_MAGIC)]) != _MAGIC:
        raise StateError("RAM section: not a vmforge RAM section")
    body, (crc,) = mv[:-_TAIL.size], _TAIL.unpack(mv[-_TAIL.size:])
    if zlib.crc32(body) != crc:
        raise StateError("RAM section: checksum mismatch (the data is corrupt)")
    regions = {base: (name, view) for name, base, view in ram_regions(machine)}
    pos = len(_MAGIC)
    (count,) = struct.unpack_from("<I", body, pos)
    pos += 4
    if count != len(regions):
        raise StateError(f"RAM section: {count} RAM regions, this machine has {len(regions)}")
    runs: list[tuple[memoryview, int, memoryview]] = []
    try:
        for _ in range(count):
            base, size, name_len = _REGION.unpack_from(body, pos)
            pos += _REGION.size
            name = bytes(body[pos:pos + name_len]).decode(errors="replace")
            pos += name_len
            mine = regions.get(base)
            if mine is None or len(mine[1]) != size or mine[0] != name:
                raise StateError(f"RAM section: region {name!r} at {base:#x} of {size} bytes "
                                 "is not in this machine's memory map")
            view = mine[1]
            while True:
                offset, length = _RUN.unpack_from(body, pos)
                pos += _RUN.size
                if not length:
                    break
                if offset + length > size or pos + length > len(body):
                    raise StateError(f"RAM section: a run at {offset:#x} of {length} bytes "
                                     f"does not fit region {name!r}")
                runs.append((view, offset, body[pos:pos + length]))
                pos += length
    except struct.error:
        raise StateError("RAM section: truncated") from None
    if pos != len(body):
        raise StateError("RAM section: bytes after the last region")
    return runs


def load_ram(machine: Any, data: bytes | memoryview) -> None:
    """Check a :func:`save_ram` section, then make ``machine``'s RAM what it holds
    (pages not in it read as zeros)."""
    runs = check_ram(machine, data)
    for region in machine.space.memory.regions:
        if not region.readonly:
            _zero(region.buffer)
    for view, offset, chunk in runs:
        view[offset:offset + len(chunk)] = chunk


def _zero(buffer: Any) -> None:
    """Make a RAM buffer all zeros: an anonymous shared mapping gives its pages back
    (``MADV_REMOVE``: no page is read or written; the mapping stays where it is, so
    the CPUs' pointers into it stay valid), anything else is scanned and zeroed
    where it is not zero already."""
    if isinstance(buffer, mmap.mmap) and hasattr(mmap, "MADV_REMOVE"):
        try:
            buffer.madvise(mmap.MADV_REMOVE)
            return
        except OSError:
            pass            # not shared memory: zero it by hand
    view = memoryview(buffer).cast("B")
    for offset, length in nonzero_runs(view):
        view[offset:offset + length] = bytes(length)
