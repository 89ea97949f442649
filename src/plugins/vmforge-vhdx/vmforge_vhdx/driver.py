"""The vhdx format driver: fixed and dynamic VHDX images, as QEMU's ``block/vhdx.c``.

Opening follows QEMU: the signature, the current header (valid checksum,
the higher sequence number), the log (replayed on a read-write open; an
image with a log to replay is refused read-only, as qemu-img refuses it),
region table 1 (checksummed), the metadata table and its five required
items, then the BAT, whose fully present payload blocks must lie in the file
clear of the header section, the log, the BAT and the metadata.

Writing follows QEMU too: the first write that changes what the disk reads
updates both headers (new data write GUID); a new payload block goes at the
end of the file, rounded up to 1 MiB, its data written before its BAT entry,
and the BAT entry goes through the log (written, flushed, applied, then the
log emptied by zeroing the log GUID in the headers).
"""

from __future__ import annotations

import os
import struct
import sys
from array import array

from vmforge.block.driver import (
    BlockError,
    BlockStatus,
    CheckResult,
    CorruptImageError,
    CreateOption,
    ImageInfo,
)
from vmforge.block.fileio import preadv_full, pwritev_full
from vmforge.block.mapped import MappedImage, open_image_file
from vmforge_vhdx import layout as L
from vmforge_vhdx.layout import Geometry, Header, MiB, round_up
from vmforge_vhdx.log import FILE_END_MAX, LogReader, build_entry, replay
from vmforge_vhdx.metadata import Regions, read_bat, read_headers, read_metadata, read_regions
from vmforge_vhdx.probe import probe as _probe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import Any, Self

_DATA = BlockStatus.DATA | BlockStatus.ALLOCATED
_ZERO = BlockStatus.ZERO | BlockStatus.ALLOCATED
_NONE = BlockStatus(0)
_U64 = (1 << 64) - 1
#: a BAT entry's low byte -> 1 when its state is fully present, else 0 (bytes.translate)
_FULLY_PRESENT = bytes(b & L.BAT_STATE_MASK == L.PAYLOAD_FULLY_PRESENT for b in range(256))


def _fully_present(low_bytes: bytes) -> Iterator[int]:
    """The indices of the BAT entries whose low bytes are ``low_bytes`` that are fully
    present (fast over millions of entries: one translate, then memchr's find)."""
    marks = low_bytes.translate(_FULLY_PRESENT)
    index = marks.find(1)
    while index >= 0:
        yield index
        index = marks.find(1, index + 1)


class Vhdx(MappedImage):
    """A VHDX image (QEMU's format name ``vhdx``): fixed or dynamic, no parent."""

    format_name = "vhdx"
    #: a payload block's data is kept as the guest reads it, at the offset block
    #: status gives
    plain_data = True
    block_status_in_map = False     # QEMU's vhdx driver has no block status
    granularity = 512
    create_options = {
        "subformat": CreateOption("subformat", str, "dynamic",
                                  "VHDX format type, can be either 'dynamic' or 'fixed'",
                                  ("dynamic", "fixed")),
        "block_size": CreateOption("block_size", int, 0, "block size; min 1MB, max 256MB; "
                                   "0 means auto-calculate based on image size"),
        "log_size": CreateOption("log_size", int, L.DEFAULT_LOG_SIZE, "log size; min 1MB"),
        "block_state_zero": CreateOption("block_state_zero", bool, True,
                                         "mark every payload block ZERO (qemu-img's default)"),
    }

    def __init__(self, filename: str, readonly: bool, fd: int) -> None:
        super().__init__(filename, readonly, fd)
        self.session_guid = L.new_guid()
        self._first_visible_write = True
        self._log_sequence = 0
        self.log_replayed = False
        self.header_blocks: list[bytearray] = []
        self.headers: list[Header | None] = []
        self.current = 0

    # -- class level ---------------------------------------------------------------------

    @classmethod
    def probe(cls, header: bytes, filename: str) -> int:
        return _probe(header, filename)

    @classmethod
    def create(cls, path: str, size: int, **options: Any) -> None:
        opts = cls.parse_create_options(options)
        if size < 0:
            raise BlockError(f"size {size} is negative", path)
        size = round_up(size, 512)
        if size > L.MAX_IMAGE_SIZE:
            raise BlockError("Image size too large; max of 64TB", path)
        log_size = round_up(opts["log_size"], MiB)
        if not MiB <= log_size <= 0xFFFFFFFF:
            raise BlockError("Log size must be a multiple of 1 MB, at least 1 MB and "
                             "smaller than 4 GB", path)
        block_size = min(round_up(opts["block_size"], MiB), L.BLOCK_SIZE_MAX)
        if block_size == 0:
            block_size = L.default_block_size(size)
        if block_size & (block_size - 1):
            raise BlockError("Block size must be a power of two", path)
        fixed = opts["subformat"] == "fixed"
        new = L.NewImage(Geometry(size, block_size, 512), log_size)
        geometry = new.geometry
        bat = array("Q", bytes(8 * geometry.bat_entries))
        if fixed or opts["block_state_zero"]:
            ratio = geometry.chunk_ratio
            for first in range(0, geometry.data_blocks, ratio):   # a chunk at a time
                n = min(ratio, geometry.data_blocks - first)
                at = geometry.bat_index(first)
                if opts["block_state_zero"]:
                    bat[at:at + n] = array("Q", [L.PAYLOAD_ZERO]) * n
                else:     # offsets are multiples of 1 MiB: the state goes in the low bits
                    start = new.data_offset + first * block_size + L.PAYLOAD_FULLY_PRESENT
                    bat[at:at + n] = array("Q", range(start, start + n * block_size,
                                                      block_size))
        if sys.byteorder == "big":
            bat.byteswap()
        seq = int.from_bytes(os.urandom(4), "little")
        guid_file, guid_data = L.new_guid(), L.new_guid()
        regions = L.region_table([(L.BAT_GUID, new.bat_offset, new.bat_length, 0),
                                  (L.METADATA_GUID, new.metadata_offset, MiB, 0)])
        try:
            with open(path, "wb") as f:
                f.write(L.file_identifier("vmforge"))
                for k, at in enumerate(L.HEADER_OFFSETS):
                    block = bytearray(L.HEADER_SIZE)
                    Header(seq + k, guid_file, guid_data, L.ZERO_GUID, 0, 1, log_size,
                           L.HEADER_SECTION_END).pack_into(block)
                    f.seek(at)
                    f.write(block)
                for at in L.REGION_TABLE_OFFSETS:
                    f.seek(at)
                    f.write(regions)
                f.seek(new.bat_offset)
                f.write(bat.tobytes())
                f.seek(new.metadata_offset)
                f.write(L.metadata_region(geometry, fixed, L.new_guid()))
                f.truncate(new.data_offset + (size if fixed else 0))
        except OSError as exc:
            raise BlockError(f"cannot create: {exc.strerror}", path) from exc

    @classmethod
    def open(cls, path: str, *, readonly: bool = True, **options: Any) -> Self:
        with open_image_file(path, readonly) as fd:
            drv = cls(path, readonly, fd)
            try:
                drv._load(bool(options.get("for_check")))
            except BaseException:
                drv.closed = True
                raise
            return drv

    # -- opening -------------------------------------------------------------------------

    def _load(self, for_check: bool) -> None:
        fd, path = self.fd, self.filename
        if os.pread(fd, 8, 0) != L.FILE_SIGNATURE:
            raise BlockError("not a VHDX image (no 'vhdxfile' signature)", path)
        self.header_blocks, self.headers, self.current = read_headers(fd, path)
        header = self.header
        self._load_log(header)
        regions = Regions(path)
        regions.add(0, L.HEADER_SECTION_END, "the header section", 0)
        if header.log_length:
            regions.add(header.log_offset, header.log_length, "the log",
                        L.HEADER_OFFSETS[self.current] + 68)
        (self.bat_offset, bat_length), (self.metadata_offset, metadata_length) = read_regions(
            fd, path, regions)
        self.regions = regions
        meta = read_metadata(fd, path, self.metadata_offset, metadata_length)
        self.geometry: Geometry = meta.geometry
        self.fixed = meta.fixed
        self.physical_sector = meta.physical_sector
        self.cluster_size = self.block_size = meta.geometry.block_size
        self.bat = read_bat(fd, path, meta.geometry, self.bat_offset, bat_length)
        if not for_check:
            problems = self.bat_problems()
            if problems:
                index, message = problems[0]
                raise CorruptImageError(message, path, self.bat_offset + 8 * index, "BAT")

    @property
    def header(self) -> Header:
        h = self.headers[self.current]
        assert h is not None
        return h

    def _load_log(self, header: Header) -> None:
        """Find the log's active sequence and replay it (read-write), or refuse."""
        at = L.HEADER_OFFSETS[self.current]
        if header.log_offset < MiB or header.log_offset % MiB:
            raise CorruptImageError(f"log offset {header.log_offset:#x} is not a multiple of "
                                    "1 MiB past the header section", self.filename, at + 72,
                                    "header")
        if header.log_version != 0:
            raise CorruptImageError(f"unsupported log version {header.log_version}",
                                    self.filename, at + 64, "header")
        if header.log_guid == L.ZERO_GUID or header.log_length == 0:
            return
        size = os.fstat(self.fd).st_size
        if header.log_length % MiB or header.log_offset + header.log_length > size:
            raise CorruptImageError(f"log of {header.log_length} bytes at "
                                    f"{header.log_offset:#x} is not a multiple of 1 MiB or "
                                    f"past the end of the file ({size} bytes)", self.filename,
                                    at + 68, "header")
        reader = LogReader(self.fd, header.log_offset, header.log_length, header.log_guid)
        entries = reader.active_sequence()
        if not entries:
            return
        if self.readonly:
            raise BlockError(f"VHDX image file '{self.filename}' opened read-only, but "
                             "contains a log that needs to be replayed. To replay the log, "
                             f"run: vmforge img check -r all '{self.filename}'",
                             self.filename)
        self._visible_write()
        replay(self.fd, entries, self.filename, header.log_offset, self._fsync_if_sync)
        self._log_sequence = entries[-1].sequence
        self._update_headers(log_guid=L.ZERO_GUID)
        self.log_replayed = True

    def bat_problems(self) -> list[tuple[int, str]]:
        """Fully present BAT entries outside the file (payload blocks and sector bitmap
        blocks alike) and payload blocks over the image's metadata, as QEMU checks them:
        ``(BAT index, message)``."""
        problems = []
        file_size = os.fstat(self.fd).st_size
        g = self.geometry
        ratio = g.chunk_ratio
        low_bytes = self.bat.tobytes()[0 if sys.byteorder == "little" else 7::8]
        for index in _fully_present(low_bytes):
            entry = self.bat[index]
            offset = entry & L.BAT_OFFSET_MASK
            payload = (index + 1) % (ratio + 1) != 0
            block = index - index // (ratio + 1)
            length = (min(g.block_size, g.size - block * g.block_size) if payload
                      else g.block_size)
            if offset >= file_size:
                problems.append((index, f"VHDX BAT entry {index} start offset {offset} points "
                                 f"after end of file ({file_size}). Image has probably been "
                                 "truncated."))
            elif offset + length > file_size:
                problems.append((index, f"VHDX BAT entry {index} end offset "
                                 f"{offset + length - 1} points after end of file "
                                 f"({file_size}). Image has probably been truncated."))
            clash = self.regions.overlap(offset, g.block_size) if payload else None
            if clash:
                problems.append((index, f"VHDX BAT entry {index}: payload block at {offset:#x} "
                                 f"overlaps {clash}"))
        return problems

    # -- headers and the log ---------------------------------------------------------------

    def _fsync_if_sync(self) -> None:
        if self.sync:
            self._fsync()

    def _update_header(self, new_data_guid: bool, log_guid: bytes | None) -> None:
        """Write the non-current header as the current one's successor (QEMU's way)."""
        other = 1 - self.current
        h = self.header.replace(sequence=(self.header.sequence + 1) & _U64,
                    file_write_guid=self.session_guid)
        if new_data_guid:
            h.data_write_guid = L.new_guid()
        if log_guid is not None:
            h.log_guid = log_guid
        block = self.header_blocks[other]
        h.pack_into(block)
        pwritev_full(self.fd, L.HEADER_OFFSETS[other], [memoryview(block)])
        self._fsync_if_sync()
        self.headers[other] = h
        self.current = other

    def _update_headers(self, new_data_guid: bool = False, log_guid: bytes | None = None) -> None:
        """Both headers, so that either one is valid and current."""
        self._update_header(new_data_guid, log_guid)
        self._update_header(new_data_guid, log_guid)

    def _visible_write(self) -> None:
        """Before the first change of what the disk reads: a new data write GUID."""
        if self._first_visible_write:
            self._first_visible_write = False
            self._update_headers(new_data_guid=True)

    def _write_metadata(self, sectors: list[tuple[int, bytes]]) -> None:
        """Write whole 4 KiB ``sectors`` of metadata through the log: the entry, then the
        sectors in place, then the log emptied."""
        header = self.header
        self._log_sequence += 1
        size = os.fstat(self.fd).st_size
        guid = L.new_guid()
        entry = build_entry(self._log_sequence, guid, sectors, flushed_offset=size,
                            last_offset=size)
        if len(entry) > header.log_length:      # no room for a log: in place only
            self._apply_metadata(sectors)
            return
        self._update_headers(log_guid=guid)
        pwritev_full(self.fd, header.log_offset, [memoryview(entry)])
        self._fsync_if_sync()
        self._apply_metadata(sectors)
        self._update_headers(log_guid=L.ZERO_GUID)

    def _apply_metadata(self, sectors: list[tuple[int, bytes]]) -> None:
        for offset, sector in sectors:
            pwritev_full(self.fd, offset, [memoryview(sector)])
        self._fsync_if_sync()

    def _set_bat(self, index: int, value: int) -> None:
        at = self.bat_offset + 8 * index
        sector_at = at - at % L.LOG_SECTOR
        sector = bytearray(L.LOG_SECTOR)
        preadv_full(self.fd, sector_at, [memoryview(sector)])
        struct.pack_into("<Q", sector, at - sector_at, value)
        self._write_metadata([(sector_at, bytes(sector))])
        self.bat[index] = value

    # -- the image -----------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self.geometry.size

    def _entry(self, i: int) -> tuple[int, int]:
        """Payload block ``i``'s BAT index and entry, its state checked."""
        index = self.geometry.bat_index(i)
        entry = self.bat[index]
        state = entry & L.BAT_STATE_MASK
        if state not in L.READS_AS_ZERO and state != L.PAYLOAD_FULLY_PRESENT:
            what = ("partially present (differencing images are not supported)"
                    if state == L.PAYLOAD_PARTIALLY_PRESENT else f"in the invalid state {state}")
            raise CorruptImageError(f"payload block {i} is {what}", self.filename,
                                    self.bat_offset + 8 * index, "BAT")
        return index, entry

    def _cluster_status(self, i: int) -> tuple[BlockStatus, int | None]:
        entry = self._entry(i)[1]
        state = entry & L.BAT_STATE_MASK
        if state == L.PAYLOAD_FULLY_PRESENT:
            return _DATA, entry & L.BAT_OFFSET_MASK
        return (_ZERO if state == L.PAYLOAD_ZERO else _NONE), None

    def _write_piece(self, i: int, within: int, data: memoryview) -> None:
        self._visible_write()
        super()._write_piece(i, within, data)

    def pwritev_runs(self, runs: Sequence[tuple[int, memoryview]]) -> None:
        """Each run written as :meth:`pwritev` would, in order, in one loop (what
        ``convert`` writes: a batch per 2 MiB): pieces in place one after the other
        in the file as one call; a new payload block allocated as by a single write.
        A run within one block is one piece (no splitting), and a block's place is
        looked up once for its pieces in a row, not per piece."""
        self._check_writable()
        checked = self._checked_runs(runs)
        with self._lock:
            self._visible_write()
            self._write_runs(checked)

    def _allocate(self, i: int, within: int, data: memoryview) -> None:
        """A new payload block at the end of the file (rounded up to 1 MiB), reading as
        zeros but for ``data``; then its BAT entry, through the log."""
        index = self._entry(i)[0]
        offset = round_up(os.fstat(self.fd).st_size, MiB)
        if offset + self.block_size > FILE_END_MAX:
            raise BlockError("the image file cannot grow further", self.filename)
        os.ftruncate(self.fd, offset + self.block_size)
        pwritev_full(self.fd, offset + within, [data])
        self._fsync_if_sync()
        self._set_bat(index, offset | L.PAYLOAD_FULLY_PRESENT)

    def check(self, repair: str | None = None) -> CheckResult:
        """The BAT checked as ``qemu-img check`` does; a log replayed on open counts as
        a fixed corruption (``check -r all`` opens read-write, which replays it).  There
        are no other repairs (nor in QEMU)."""
        result = CheckResult(self.filename, self.format_name)
        if self.log_replayed:
            result.corruptions_fixed += 1
        for _, message in self.bat_problems():
            result.corruptions += 1
            result.messages.append(f"ERROR: {message}")
        return result

    def info(self) -> ImageInfo:
        return self._info(cluster_size=self.block_size)
