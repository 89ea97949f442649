"""The parallels format driver: Parallels expandable images (ploop, ``.hds``).

Layout (all integers little-endian), as QEMU's ``docs/interop/parallels.txt``
describes it and ``qemu-img create -f parallels`` writes it::

    0       header, 64 bytes: magic "WithouFreSpacExt" (or the older
            "WithoutFreeSpace"), version 2, heads, cylinders, tracks (the
            cluster size in sectors), BAT entries, disk size in sectors,
            in-use flag, data offset in sectors, flags, format extension
            offset in sectors
    64      the BAT: one u32 per cluster of the disk, the cluster's place in
            the file (in clusters for "WithouFreSpacExt", in sectors for
            "WithoutFreeSpace"; 0: not allocated, reads as zeros)
    data    from the data offset (qemu-img: the BAT rounded up to a cluster),
            the clusters, appended in the order they are first written

The in-use field is 0x746F6E59 ("Ynot") while a writer has the image open; a
read-write open of an image left so (a crash) is refused until ``check -r
all``, as QEMU does.  Closing cuts the file after the last cluster.
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
from vmforge.block.fileio import padded, pwritev_full
from vmforge.block.mapped import MappedImage, open_image_file
from vmforge_parallels.probe import MAGIC_EXT, MAGIC_OLD
from vmforge_parallels.probe import probe as _probe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Self

VERSION = 2
SECTOR = 512
INUSE = 0x746F6E59
# magic, version, heads, cylinders, tracks, BAT entries, sectors, in use, data offset,
# flags, extension offset
_HEADER = struct.Struct("<16sIIIIIQIIIQ")
HEADER_SIZE = _HEADER.size   # 64
DEFAULT_CLUSTER = 1 << 20
#: QEMU's bounds: tracks up to INT32_MAX / 513, the BAT up to INT_MAX bytes
MAX_TRACKS = 0x7FFFFFFF // 513
MAX_BAT = 0x7FFFFFFF // 4
AT_VERSION, AT_TRACKS, AT_BAT, AT_SECTORS, AT_INUSE, AT_DATA_OFF, AT_EXT = (
    16, 28, 32, 36, 44, 48, 56)

_DATA = BlockStatus.DATA | BlockStatus.ALLOCATED
#: an unallocated cluster reads as zeros, and is not "present" (QEMU's
#: parallels_co_block_status answers 0 there; with no backing file the block layer
#: makes it zero)
_ZERO = BlockStatus.ZERO


def _align(n: int, unit: int) -> int:
    return -(-n // unit) * unit


class Parallels(MappedImage):
    """A Parallels expandable image."""

    format_name = "parallels"
    #: a cluster's data is kept as the guest reads it, at the offset block status gives
    plain_data = True
    locked_reads = True
    granularity = DEFAULT_CLUSTER
    create_options = {
        "cluster_size": CreateOption("cluster_size", int, DEFAULT_CLUSTER,
                                     "cluster size in bytes (rounded up to 512)"),
    }

    def __init__(self, filename: str, readonly: bool, fd: int, fields: tuple[Any, ...],
                 bat: array[int], file_size: int) -> None:
        super().__init__(filename, readonly, fd)
        (self.magic, _, self.heads, self.cylinders, self.tracks, _, self.sectors,
         self.inuse, data_off, self.flags, self.ext_off) = fields
        self.cluster_size = self.tracks * SECTOR
        self.granularity = self.cluster_size  # type: ignore[misc]
        self.multiplier = self.tracks if self.magic == MAGIC_EXT else 1
        self.data_off = (data_off or _align(HEADER_SIZE + 4 * len(bat), SECTOR)
                         // SECTOR) * SECTOR
        self.bat = bat
        self.file_size = file_size
        #: where the next cluster goes (QEMU's data_end)
        self.data_end = max([self.data_off] + [self._offset(e) + self.cluster_size
                                               for e in bat if e])

    # -- class level ---------------------------------------------------------------------

    @classmethod
    def probe(cls, header: bytes, filename: str) -> int:
        return _probe(header, filename)

    @classmethod
    def create(cls, path: str, size: int, **options: Any) -> None:
        opts = cls.parse_create_options(options)
        cs = _align(max(opts["cluster_size"], 1), SECTOR)
        size = _align(size, SECTOR)
        if cs // SECTOR > MAX_TRACKS:
            raise BlockError(f"cluster size {cs} is too large", path)
        if size >= cs << 32:
            raise BlockError(f"image size {size} is too large for a cluster size of {cs}",
                             path)
        entries = -(-size // cs)
        sectors = size // SECTOR
        data_off = _align(HEADER_SIZE + 4 * entries, cs)
        header = _HEADER.pack(MAGIC_EXT, VERSION, 16, sectors // 16 // 32 & 0xFFFFFFFF,
                              cs // SECTOR, entries, sectors, 0, data_off // SECTOR, 0, 0)
        try:
            with open(path, "wb") as f:
                f.write(header)
                f.truncate(data_off)
        except OSError as exc:
            raise BlockError(f"cannot create: {exc.strerror}", path) from exc

    @classmethod
    def open(cls, path: str, *, readonly: bool = True, **options: Any) -> Self:
        with open_image_file(path, readonly) as fd:
            file_size = os.fstat(fd).st_size
            fields, bat = cls._read_meta(fd, path, file_size)
            drv = cls(path, readonly, fd, fields, bat, file_size)
            drv._check_bat()
            if not readonly:
                drv._open_for_write(bool(options.get("for_check")))
            return drv

    @staticmethod
    def _read_meta(fd: int, path: str, file_size: int) -> tuple[tuple[Any, ...], array[int]]:
        raw = os.pread(fd, HEADER_SIZE, 0)
        if raw[:16] not in (MAGIC_EXT, MAGIC_OLD):
            raise BlockError("image not in parallels format (bad magic)", path)
        if len(raw) < HEADER_SIZE:
            raise CorruptImageError(f"header truncated to {len(raw)} bytes", path, 0, "header")
        fields = _HEADER.unpack(raw)
        magic, version, _, _, tracks, entries, sectors, inuse, data_off, _, ext_off = fields
        if version != VERSION:
            raise BlockError(f"parallels version {version} is not supported (only 2)", path)
        if magic == MAGIC_OLD:
            if sectors >> 32:
                raise CorruptImageError("disk size uses the high 32 bits in an old "
                                        "(WithoutFreeSpace) image", path, AT_SECTORS, "header")
        if not 0 < tracks <= MAX_TRACKS:
            raise CorruptImageError(f"cluster size of {tracks} sectors is zero or too large",
                                    path, AT_TRACKS, "header")
        if entries > MAX_BAT or HEADER_SIZE + 4 * entries > file_size:
            raise CorruptImageError(f"BAT of {entries} entries is too large or past the end "
                                    "of the file", path, AT_BAT, "header")
        if sectors > entries * tracks:
            raise CorruptImageError(f"disk of {sectors} sectors is larger than its BAT of "
                                    f"{entries} clusters maps", path, AT_SECTORS, "header")
        if inuse not in (0, INUSE, 0x312E3276):
            raise CorruptImageError(f"in-use field {inuse:#x} is not a known value", path,
                                    AT_INUSE, "header")
        if data_off:
            if data_off * SECTOR < HEADER_SIZE + 4 * entries or data_off * SECTOR > file_size:
                raise CorruptImageError(f"data offset of {data_off} sectors overlaps the BAT "
                                        "or is past the end of the file", path, AT_DATA_OFF,
                                        "header")
            if magic == MAGIC_EXT and data_off % tracks:
                raise CorruptImageError(f"data offset of {data_off} sectors is not a whole "
                                        "number of clusters", path, AT_DATA_OFF, "header")
        elif magic == MAGIC_EXT:
            raise CorruptImageError("data offset is zero", path, AT_DATA_OFF, "header")
        if ext_off and (ext_off * SECTOR < data_off * SECTOR
                        or ext_off * SECTOR + tracks * SECTOR > file_size):
            raise CorruptImageError(f"format extension at sector {ext_off} is outside the "
                                    "data area", path, AT_EXT, "header")
        bat = array("I", os.pread(fd, 4 * entries, HEADER_SIZE))
        if sys.byteorder == "big":
            bat.byteswap()
        return fields, bat

    def _offset(self, entry: int) -> int:
        return entry * self.multiplier * SECTOR

    def _check_bat(self) -> None:
        """Every entry in the data area, aligned, inside the file, and used once."""
        cs, seen = self.cluster_size, set()
        for i, entry in enumerate(self.bat):
            if not entry:
                continue
            off = self._offset(entry)
            if (off < self.data_off or (off - self.data_off) % cs
                    or off + cs > self.file_size or off in seen):
                raise CorruptImageError(
                    f"cluster {i} at {off:#x} is outside the data area, unaligned, past the "
                    "end of the file or used twice", self.filename, HEADER_SIZE + 4 * i,
                    "BAT")
            seen.add(off)

    def _open_for_write(self, for_check: bool) -> None:
        if self.ext_off:
            raise BlockError("images with a format extension (dirty bitmaps) can only be "
                             "opened read-only", self.filename)
        if self.inuse == INUSE and not for_check:
            raise BlockError("image was not closed correctly; cannot be opened read/write "
                             "(repair it with check -r all)", self.filename)
        self._write_inuse(INUSE)

    def _write_inuse(self, value: int) -> None:
        os.pwrite(self.fd, struct.pack("<I", value), AT_INUSE)

    # -- the image -----------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self.sectors * SECTOR

    def _cluster_status(self, i: int) -> tuple[BlockStatus, int | None]:
        entry = self.bat[i]
        return (_DATA, self._offset(entry)) if entry else (_ZERO, None)

    def _allocate(self, i: int, within: int, data: memoryview) -> None:
        cs = self.cluster_size
        at = self.data_end
        if (at // SECTOR) % self.multiplier or at // SECTOR // self.multiplier >= 1 << 32:
            raise BlockError(f"no room for a new cluster at {at:#x}", self.filename)
        if at >= self.file_size:
            # past the end of the file: the cluster reads as zeros once the file
            # reaches its end (a hole), so only the data is written, as QEMU's
            # preallocation by truncation leaves it (not zeros, then the data over them)
            os.ftruncate(self.fd, at + cs)
            pwritev_full(self.fd, at + within, [data])
        else:     # the cluster first, zeros around
            pwritev_full(self.fd, at, padded(cs, within, data))
        self.data_end = at + cs
        self.file_size = max(self.file_size, self.data_end)
        self.bat[i] = at // SECTOR // self.multiplier   # then its BAT entry
        os.pwrite(self.fd, struct.pack("<I", self.bat[i]), HEADER_SIZE + 4 * i)

    def check(self, repair: str | None = None) -> CheckResult:
        """The in-use flag (a corruption; ``-r all`` clears it) and space past the last
        cluster (a leak; ``-r leaks`` cuts the file).  The BAT was checked at open."""
        res = CheckResult(self.filename, self.format_name)
        fix = not self.readonly
        with self._lock:
            if self.inuse == INUSE:
                if fix and repair == "all":
                    self.inuse = 0   # written as closed below, and at close
                    res.corruptions_fixed += 1
                    res.messages.append("Repairing image was not closed correctly")
                else:
                    res.corruptions += 1
                    res.messages.append("ERROR image was not closed correctly")
            allocated = [self._offset(e) for e in self.bat if e]
            end = max([self.data_off] + [off + self.cluster_size for off in allocated])
            if self.ext_off:
                end = max(end, self.ext_off * SECTOR + self.cluster_size)
            size = os.fstat(self.fd).st_size
            if size > end:
                count = -(-(size - end) // self.cluster_size)
                if fix and repair:
                    os.ftruncate(self.fd, end)
                    self.file_size = end
                    res.leaks_fixed += count
                    res.messages.append(f"Repairing space leaked at the end of the image "
                                        f"{size - end}")
                else:
                    res.leaks += count
                    res.messages.append(f"ERROR space leaked at the end of the image "
                                        f"{size - end}")
            prev, fragmented = 0, 0   # in BAT order, as QEMU counts them
            for entry in self.bat:
                off = self._offset(entry) if entry else 0
                if off and prev and prev + self.cluster_size != off:
                    fragmented += 1
                prev = off
            res.fragmented_clusters = fragmented
        res.image_end_offset = end
        res.total_clusters = len(self.bat)
        res.allocated_clusters = len(allocated)
        return res

    def info(self) -> ImageInfo:
        return self._info(cluster_size=self.cluster_size, dirty=self.inuse == INUSE)

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self.readonly:   # closed cleanly: not in use, the file cut to its data
                with self._lock:
                    self._write_inuse(0)
                    self.inuse = 0
                    if os.fstat(self.fd).st_size > self.data_end:
                        os.ftruncate(self.fd, self.data_end)
        finally:
            super().close()
