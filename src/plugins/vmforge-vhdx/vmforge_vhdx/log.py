"""The VHDX log: metadata updates written ahead, replayed when an image is opened.

The log is a circular buffer of 4 KiB sectors at ``log_offset``.  An entry is::

    sector 0   entry header (64 bytes: "loge", CRC-32C of the whole entry, its
               length, tail, sequence number, descriptor count, log GUID,
               flushed and last file offsets), then descriptors of 32 bytes
    ...        more descriptor sectors when there are more than 126
    data       one sector per data descriptor: "data", the high half of the
               sequence number, bytes 8..4091 of the sector to write, the low half

A data descriptor ("desc") carries the first 8 and the last 4 bytes of its
sector; a zero descriptor ("zero") zeroes a range.  Entries are valid only
with the header's log GUID; the active sequence is the run of entries with
consecutive sequence numbers ending at the highest one.  An empty log has a
zero log GUID in the header.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence

from vmforge.block.driver import CorruptImageError
from vmforge.block.fileio import preadv_full, pwritev_full
from vmforge.record import Record
from vmforge_vhdx.layout import LOG_SECTOR, REGION_TABLE_OFFSETS, MiB, checksum, crc32c, round_up

ENTRY_SIGNATURE = b"loge"
DATA_DESC = b"desc"
ZERO_DESC = b"zero"
DATA_SIGNATURE = b"data"
# signature, checksum, entry length, tail, sequence number, descriptor count, reserved,
# log GUID, flushed file offset, last file offset
ENTRY_HEADER = struct.Struct("<4sIIIQII16sQQ")
# signature, trailing bytes (data) or reserved (zero), leading bytes (data) or zero
# length, file offset, sequence number
DESCRIPTOR = struct.Struct("<4sIQQQ")
#: no replayed write may reach beyond this (64 TiB of payload and room for the metadata)
FILE_END_MAX = 1 << 47


def descriptor_sectors(count: int) -> int:
    """Sectors holding the entry header and ``count`` descriptors (at least one)."""
    return -(-(count + 2) // (LOG_SECTOR // DESCRIPTOR.size))


class Entry(Record):
    """A valid log entry, as read from the log."""

    __slots__ = __match_args__ = ("position", "sequence", "tail", "length", "flushed_offset",
                                  "last_offset", "ops")
    position: int
    sequence: int
    tail: int
    length: int
    flushed_offset: int
    last_offset: int
    #: its descriptors in order: (file offset, length, the 4 KiB sector or None for zeros)
    ops: list[tuple[int, int, bytes | None]]

    def __init__(self, position: int, sequence: int, tail: int, length: int,
                 flushed_offset: int, last_offset: int,
                 ops: list[tuple[int, int, bytes | None]] | None = None) -> None:
        self.position = position
        self.sequence = sequence
        self.tail = tail
        self.length = length
        self.flushed_offset = flushed_offset
        self.last_offset = last_offset
        self.ops = [] if ops is None else ops


def build_entry(sequence: int, log_guid: bytes, writes: Sequence[tuple[int, bytes]],
                zeros: Sequence[tuple[int, int]] = (), *, flushed_offset: int,
                last_offset: int, tail: int = 0) -> bytes:
    """One log entry writing the 4 KiB sectors ``writes`` (file offsets aligned to
    4 KiB) and zeroing the ranges ``zeros``, checksummed."""
    count = len(zeros) + len(writes)
    desc_sectors = descriptor_sectors(count)
    buf = bytearray((desc_sectors + len(writes)) * LOG_SECTOR)
    ENTRY_HEADER.pack_into(buf, 0, ENTRY_SIGNATURE, 0, len(buf), tail, sequence, count, 0,
                           log_guid, flushed_offset, last_offset)
    at = ENTRY_HEADER.size
    for offset, length in zeros:
        DESCRIPTOR.pack_into(buf, at, ZERO_DESC, 0, length, offset, sequence)
        at += DESCRIPTOR.size
    data_at = desc_sectors * LOG_SECTOR
    for offset, sector in writes:
        if len(sector) != LOG_SECTOR or offset % LOG_SECTOR:
            raise ValueError("log writes are whole, aligned 4 KiB sectors")
        lead, trail = struct.unpack_from("<Q", sector)[0], struct.unpack_from("<I", sector, 4092)[0]
        DESCRIPTOR.pack_into(buf, at, DATA_DESC, trail, lead, offset, sequence)
        at += DESCRIPTOR.size
        struct.pack_into("<4sI", buf, data_at, DATA_SIGNATURE, sequence >> 32)
        buf[data_at + 8:data_at + 4092] = sector[8:4092]
        struct.pack_into("<I", buf, data_at + 4092, sequence & 0xFFFFFFFF)
        data_at += LOG_SECTOR
    struct.pack_into("<I", buf, 4, checksum(buf))
    return bytes(buf)


class LogReader:
    """Reads entries of the log at ``offset`` (``length`` bytes) of ``fd``."""

    def __init__(self, fd: int, offset: int, length: int, log_guid: bytes) -> None:
        self.fd, self.offset, self.length, self.log_guid = fd, offset, length, log_guid

    def _read(self, position: int, n: int) -> bytes:
        """``n`` bytes from ``position`` of the circular log."""
        out = bytearray()
        while len(out) < n:
            position %= self.length
            k = min(n - len(out), self.length - position)
            buf = bytearray(k)
            preadv_full(self.fd, self.offset + position, [memoryview(buf)])
            out += buf
            position += k
        return bytes(out)

    def entry_at(self, position: int) -> Entry | None:
        """The valid entry at ``position``, or None."""
        head = self._read(position, ENTRY_HEADER.size)
        (sig, crc, length, tail, seq, count, _, guid, flushed,
         last) = ENTRY_HEADER.unpack(head)
        if (sig != ENTRY_SIGNATURE or guid != self.log_guid or seq == 0
                or length % LOG_SECTOR or not 0 < length <= self.length
                or count * DESCRIPTOR.size > length
                or descriptor_sectors(count) * LOG_SECTOR > length):
            return None
        raw = self._read(position, length)
        if crc32c(raw[8:], crc32c(raw[:4] + bytes(4))) != crc:
            return None
        entry = Entry(position, seq, tail, length, flushed, last)
        data_at = descriptor_sectors(count) * LOG_SECTOR
        for k in range(count):
            sig, trail, lead, offset, dseq = DESCRIPTOR.unpack_from(
                raw, ENTRY_HEADER.size + k * DESCRIPTOR.size)
            if dseq != seq or offset % LOG_SECTOR:
                return None
            if sig == ZERO_DESC:
                if lead % LOG_SECTOR:
                    return None
                entry.ops.append((offset, lead, None))
            elif sig == DATA_DESC:
                if data_at + LOG_SECTOR > length:
                    return None
                dsig, high = struct.unpack_from("<4sI", raw, data_at)
                low = struct.unpack_from("<I", raw, data_at + 4092)[0]
                if dsig != DATA_SIGNATURE or (high << 32 | low) != seq:
                    return None
                sector = (struct.pack("<Q", lead) + raw[data_at + 8:data_at + 4092]
                          + struct.pack("<I", trail))
                entry.ops.append((offset, LOG_SECTOR, sector))
                data_at += LOG_SECTOR
            else:
                return None
        return entry

    def active_sequence(self) -> list[Entry]:
        """The entries to replay, oldest first (empty when there are none)."""
        found: dict[int, Entry] = {}
        for position in range(0, self.length - self.length % LOG_SECTOR, LOG_SECTOR):
            entry = self.entry_at(position)
            if entry is not None:
                found[position] = entry
        if not found:
            return []
        newest = max(found.values(), key=lambda e: e.sequence)
        chain = [newest]
        by_end = {(e.position + e.length) % self.length: e for e in found.values()}
        while chain[0].position != newest.tail % self.length and len(chain) < len(found):
            before = by_end.get(chain[0].position)
            if before is None or before.sequence != chain[0].sequence - 1:
                break
            chain.insert(0, before)
        return chain


def replay(fd: int, entries: Sequence[Entry], filename: str, log_at: int,
           sync: Callable[[], None]) -> None:
    """Write the entries' sectors and zeros into the file, in order, and grow the file
    to the entries' last file offset; refuses entries that do not fit the file."""
    for entry in entries:
        size = os.fstat(fd).st_size
        where = log_at + entry.position
        if entry.flushed_offset > size:
            raise CorruptImageError(
                f"log entry {entry.sequence} was flushed with the file {entry.flushed_offset} "
                f"bytes long, but it has {size}: the image was truncated", filename, where,
                "log")
        limit = max(size, round_up(min(entry.last_offset, FILE_END_MAX), MiB))
        for offset, n, _ in entry.ops:
            if offset < REGION_TABLE_OFFSETS[0] or offset + n > limit:
                raise CorruptImageError(
                    f"log entry {entry.sequence} writes {n} bytes at {offset:#x}, over the "
                    f"headers or past the file (up to {limit:#x})", filename, where, "log")
    for entry in entries:
        for offset, n, sector in entry.ops:
            if sector is not None:
                pwritev_full(fd, offset, [memoryview(sector)])
                continue
            end = min(offset + n, os.fstat(fd).st_size)   # past the end: zeros already
            chunk = memoryview(bytes(min(MiB, max(end - offset, 0))))
            while offset < end:
                k = min(len(chunk), end - offset)
                pwritev_full(fd, offset, [chunk[:k]])
                offset += k
        last = round_up(min(entry.last_offset, FILE_END_MAX), MiB)
        if os.fstat(fd).st_size < last:
            os.ftruncate(fd, last)
    sync()
