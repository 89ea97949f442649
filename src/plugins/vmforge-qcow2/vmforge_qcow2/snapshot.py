"""Internal snapshots: the snapshot table (read-only)."""

from __future__ import annotations

import struct

from vmforge.block import CorruptImageError
from vmforge.record import FrozenRecord

from .fileio import ImageFile
from .header import MAX_L1_BYTES

_ENTRY = struct.Struct(">QIHHIIQII")
MAX_EXTRA = 1024          # QEMU: QCOW_MAX_SNAPSHOT_EXTRA_DATA
MAX_TABLE_BYTES = 64 << 20  # QEMU: QCOW_MAX_SNAPSHOTS_SIZE


class Snapshot(FrozenRecord):
    """One internal snapshot (the columns of ``qemu-img snapshot -l``; a frozen record,
    as :mod:`vmforge.record` explains: no dataclass on ``vmforge img``'s path)."""

    __slots__ = __match_args__ = (
        "id", "name", "l1_table_offset", "l1_size", "vm_state_size", "date_sec", "date_nsec",
        "vm_clock_nsec", "disk_size", "icount", "entry_offset")
    id: str
    name: str
    l1_table_offset: int
    l1_size: int
    vm_state_size: int
    date_sec: int
    date_nsec: int
    vm_clock_nsec: int
    disk_size: int | None
    icount: int | None
    #: byte offset of this entry in the file
    entry_offset: int

    def __init__(self, id: str, name: str, l1_table_offset: int, l1_size: int,
                 vm_state_size: int, date_sec: int, date_nsec: int, vm_clock_nsec: int,
                 disk_size: int | None, icount: int | None, entry_offset: int = 0) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "id", id)
        setattr_(self, "name", name)
        setattr_(self, "l1_table_offset", l1_table_offset)
        setattr_(self, "l1_size", l1_size)
        setattr_(self, "vm_state_size", vm_state_size)
        setattr_(self, "date_sec", date_sec)
        setattr_(self, "date_nsec", date_nsec)
        setattr_(self, "vm_clock_nsec", vm_clock_nsec)
        setattr_(self, "disk_size", disk_size)
        setattr_(self, "icount", icount)
        setattr_(self, "entry_offset", entry_offset)

    def to_json(self) -> dict[str, object]:
        """The fields of ``qemu-img info --output json`` ``snapshots``."""
        out: dict[str, object] = {
            "id": self.id, "name": self.name, "vm-state-size": self.vm_state_size,
            "date-sec": self.date_sec, "date-nsec": self.date_nsec,
            "vm-clock-sec": self.vm_clock_nsec // 1_000_000_000,
            "vm-clock-nsec": self.vm_clock_nsec % 1_000_000_000,
        }
        if self.icount is not None:
            out["icount"] = self.icount
        return out


def read_snapshots(f: ImageFile, offset: int, count: int, cluster_size: int) -> list[Snapshot]:
    """Parse ``count`` snapshot entries at ``offset``, checking every bound."""
    out: list[Snapshot] = []
    pos = offset
    for i in range(count):
        where = f"snapshot table entry {i}"
        if pos - offset + _ENTRY.size > MAX_TABLE_BYTES:
            raise CorruptImageError("snapshot table is larger than 64 MiB", f.filename,
                                    pos, "snapshot table")
        raw = f.read_table(pos, _ENTRY.size, where)
        (l1_off, l1_size, id_len, name_len, dsec, dnsec, clock, vmstate,
         extra_len) = _ENTRY.unpack(raw)
        if extra_len > MAX_EXTRA:
            raise CorruptImageError(f"extra data of {extra_len} bytes is above {MAX_EXTRA}",
                                    f.filename, pos, where)
        body = f.read_table(pos + _ENTRY.size, extra_len + id_len + name_len, where)
        extra = body[:extra_len]
        sid = body[extra_len:extra_len + id_len].decode("utf-8", "replace")
        name = body[extra_len + id_len:].decode("utf-8", "replace")
        disk_size = icount = None
        if len(extra) >= 8:
            vmstate = struct.unpack_from(">Q", extra, 0)[0]
        if len(extra) >= 16:
            disk_size = struct.unpack_from(">Q", extra, 8)[0]
        if len(extra) >= 24:
            icount = struct.unpack_from(">q", extra, 16)[0]
            if icount < 0:
                icount = None
        if l1_size > MAX_L1_BYTES // 8:
            raise CorruptImageError(f"snapshot L1 table has {l1_size} entries (too many)",
                                    f.filename, pos, where)
        if l1_size and (l1_off % cluster_size or l1_off == 0
                        or l1_off + 8 * l1_size > f.end):
            raise CorruptImageError(f"snapshot L1 table at {l1_off:#x} is misaligned or "
                                    "outside the file", f.filename, pos, where)
        if disk_size is not None and disk_size >= 1 << 63:
            raise CorruptImageError(f"snapshot disk size {disk_size} is not below 2^63",
                                    f.filename, pos, where)
        out.append(Snapshot(sid, name, l1_off, l1_size, vmstate, dsec, dnsec, clock,
                            disk_size, icount, pos))
        size = _ENTRY.size + extra_len + id_len + name_len
        pos += size + (-size % 8)
    return out


def table_bytes(snaps: list[Snapshot], f: ImageFile, offset: int) -> int:
    """Bytes the snapshot table takes (for refcount checks)."""
    if not snaps:
        return 0
    last = snaps[-1]
    raw = f.read_table(last.entry_offset, _ENTRY.size, "snapshot table")
    _, _, id_len, name_len, *_rest, extra_len = _ENTRY.unpack(raw)
    size = _ENTRY.size + extra_len + id_len + name_len
    return last.entry_offset + size + (-size % 8) - offset


def find_snapshot(snaps: list[Snapshot], key: str) -> Snapshot | None:
    """By id first, then by name (as ``qemu-img snapshot``/``-l`` resolve it)."""
    for s in snaps:
        if s.id == key:
            return s
    for s in snaps:
        if s.name == key:
            return s
    return None
