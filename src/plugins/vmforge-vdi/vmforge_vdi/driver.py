"""The vdi format driver: VirtualBox images, version 1.1, dynamic and static.

Layout (all integers little-endian), as QEMU's ``block/vdi.c`` reads and
writes it::

    0       header (512 bytes): a text line, signature 0xbeda107f, version
            1.1, image type (1 dynamic, 2 static), offsets of the block map
            and of the data, sector size 512, disk size, block size (1 MiB),
            blocks in the image, blocks allocated, UUIDs
    0x200   block map: one u32 per block of the disk, the index of its data
            block (0xffffffff: not allocated, 0xfffffffe: discarded; both
            read as zeros)
    data    data blocks, densely numbered in the order they were allocated

A new block gets the number ``blocks_allocated``: its data is written first,
then the header's count, then the block map entry.
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
    UnsupportedOperation,
)
from vmforge.block.fileio import padded, pwritev_full
from vmforge.block.mapped import MappedImage, open_image_file
from vmforge_vdi.probe import HEADER_SIZE, SIGNATURE
from vmforge_vdi.probe import probe as _probe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Self

TEXT = b"<<< QEMU VM Virtual Disk Image >>>\n"
VERSION_1_1 = 0x00010001
TYPE_DYNAMIC = 1
TYPE_STATIC = 2
SECTOR = 512
BLOCK_SIZE = 1 << 20
UNALLOCATED = 0xFFFFFFFF
DISCARDED = 0xFFFFFFFE
#: the most blocks QEMU accepts, and so the largest disk
BLOCKS_MAX = 0x3FFFFFFF
DISK_SIZE_MAX = BLOCKS_MAX * BLOCK_SIZE

# text, signature, version, header size, image type, image flags, description,
# block map offset, data offset, cylinders, heads, sectors, sector size, unused,
# disk size, block size, block extra, blocks in image, blocks allocated,
# uuid image, uuid last snapshot, uuid link, uuid parent, unused
_HEADER = struct.Struct("<64sIIIII256sIIIIIIIQIIII16s16s16s16s56s")
assert _HEADER.size == HEADER_SIZE
ALLOCATED_AT = 0x184   # blocks_allocated
_FIELD_AT = {"signature": 0x40, "version": 0x44, "image type": 0x4C, "offset_bmap": 0x154,
             "offset_data": 0x158, "sector_size": 0x168, "disk_size": 0x170,
             "block_size": 0x178, "blocks_in_image": 0x180, "uuid_link": 0x1A8,
             "uuid_parent": 0x1B8}

_DATA = BlockStatus.DATA | BlockStatus.ALLOCATED
_ZERO = BlockStatus.ZERO | BlockStatus.ALLOCATED


def _header(size: int, blocks: int, bmap_bytes: int, static: bool) -> bytes:
    """A new image's header (its random UUIDs: uuid is imported to create one only)."""
    import uuid

    return _HEADER.pack(TEXT, SIGNATURE, VERSION_1_1, 0x180,
                        TYPE_STATIC if static else TYPE_DYNAMIC, 0, b"", 0x200,
                        0x200 + bmap_bytes, 0, 0, 0, SECTOR, 0, size, BLOCK_SIZE, 0, blocks,
                        blocks if static else 0, uuid.uuid4().bytes, uuid.uuid4().bytes,
                        bytes(16), bytes(16), b"")


class Vdi(MappedImage):
    """A VDI image (QEMU's format name ``vdi``)."""

    format_name = "vdi"
    #: a block's data is kept as the guest reads it, at the offset block status gives
    plain_data = True
    granularity = SECTOR
    create_options = {
        "static": CreateOption("static", bool, False,
                               "a static (pre-allocated) image: every block allocated"),
    }

    def __init__(self, filename: str, readonly: bool, fd: int, header: bytearray,
                 bmap: array[int]) -> None:
        super().__init__(filename, readonly, fd)
        self.header = header
        (_, _, _, _, self.image_type, _, _, self.offset_bmap, self.offset_data, _, _, _, _, _,
         disk_size, self.cluster_size, _, self.blocks_in_image, self.blocks_allocated,
         *_) = _HEADER.unpack_from(header)
        # 'VBoxManage convertfromraw' can make odd sizes: the tail is ignored (as QEMU)
        self._size = disk_size // SECTOR * SECTOR
        self.bmap = bmap
        in_range = [e for e in bmap if e < self.blocks_in_image]
        self._max_used = max(in_range, default=-1)
        #: the file's size as this driver left it (-1: not asked yet)
        self._file_end = -1

    # -- class level ---------------------------------------------------------------------

    @classmethod
    def probe(cls, header: bytes, filename: str) -> int:
        return _probe(header, filename)

    @classmethod
    def create(cls, path: str, size: int, **options: Any) -> None:
        opts = cls.parse_create_options(options)
        if size < 0:
            raise BlockError(f"size {size} is negative", path)
        size = -(-size // SECTOR) * SECTOR
        if size > DISK_SIZE_MAX:
            raise BlockError(f"unsupported VDI image size (size is {size:#x}, max supported "
                             f"is {DISK_SIZE_MAX:#x})", path)
        blocks = -(-size // BLOCK_SIZE)
        bmap_bytes = -(-blocks * 4 // SECTOR) * SECTOR
        static = opts["static"]
        entries = array("I", range(blocks) if static else [UNALLOCATED] * blocks)
        if sys.byteorder == "big":
            entries.byteswap()
        try:
            with open(path, "wb") as f:
                f.write(_header(size, blocks, bmap_bytes, static))
                f.write(entries.tobytes().ljust(bmap_bytes, b"\0"))
                if static:
                    f.truncate(HEADER_SIZE + bmap_bytes + blocks * BLOCK_SIZE)
        except OSError as exc:
            raise BlockError(f"cannot create: {exc.strerror}", path) from exc

    @classmethod
    def open(cls, path: str, *, readonly: bool = True, **options: Any) -> Self:
        with open_image_file(path, readonly) as fd:
            header, bmap = cls._read_metadata(fd, path)
            return cls(path, readonly, fd, header, bmap)

    @staticmethod
    def _read_metadata(fd: int, path: str) -> tuple[bytearray, array[int]]:
        raw = bytearray(os.pread(fd, HEADER_SIZE, 0))
        if len(raw) < 0x44 or struct.unpack_from("<I", raw, 0x40)[0] != SIGNATURE:
            raise BlockError("not a VDI image (bad signature)", path)
        if len(raw) < HEADER_SIZE:
            raise CorruptImageError(f"header truncated to {len(raw)} bytes", path, 0, "header")
        (_, _, version, _, _, _, _, bmap_at, data_at, _, _, _, sector_size, _, disk_size,
         block_size, _, blocks, _, _, _, link, parent, _) = _HEADER.unpack(raw)

        def bad(message: str, field: str) -> CorruptImageError:
            return CorruptImageError(message, path, _FIELD_AT[field], "header")

        if version != VERSION_1_1:
            raise BlockError(f"unsupported VDI image (version {version >> 16}."
                             f"{version & 0xFFFF})", path)
        if disk_size > DISK_SIZE_MAX:
            raise bad(f"unsupported VDI image size (size is {disk_size:#x}, max supported "
                      f"is {DISK_SIZE_MAX:#x})", "disk_size")
        if bmap_at % SECTOR or bmap_at < HEADER_SIZE:
            raise bad(f"unsupported VDI image (block map offset {bmap_at:#x} is unaligned "
                      "or inside the header)", "offset_bmap")
        if data_at % SECTOR:
            raise bad(f"unsupported VDI image (unaligned data offset {data_at:#x})",
                      "offset_data")
        if sector_size != SECTOR:
            raise bad(f"unsupported VDI image (sector size {sector_size} is not {SECTOR})",
                      "sector_size")
        if block_size != BLOCK_SIZE:
            raise bad(f"unsupported VDI image (block size {block_size} is not {BLOCK_SIZE})",
                      "block_size")
        if disk_size > blocks * block_size:
            raise bad(f"unsupported VDI image (disk size {disk_size}, image bitmap has room "
                      f"for {blocks * block_size})", "disk_size")
        if any(link):
            raise bad("unsupported VDI image (non-NULL link UUID)", "uuid_link")
        if any(parent):
            raise bad("unsupported VDI image (non-NULL parent UUID)", "uuid_parent")
        if blocks > BLOCKS_MAX:
            raise bad(f"unsupported VDI image (too many blocks {blocks}, max is {BLOCKS_MAX})",
                      "blocks_in_image")
        if data_at < bmap_at + 4 * blocks:
            raise bad(f"data offset {data_at:#x} is inside the block map at {bmap_at:#x} of "
                      f"{blocks} entries", "offset_data")
        if bmap_at + 4 * blocks > os.fstat(fd).st_size:
            raise CorruptImageError(f"the block map of {blocks} entries at {bmap_at:#x} is "
                                    "past the end of the file", path, bmap_at, "block map")
        bmap = array("I", os.pread(fd, 4 * blocks, bmap_at))
        if len(bmap) != blocks:
            raise CorruptImageError("block map truncated", path, bmap_at, "block map")
        if sys.byteorder == "big":
            bmap.byteswap()
        return raw, bmap

    # -- the image -----------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    def _cluster_status(self, i: int) -> tuple[BlockStatus, int | None]:
        """Block ``i``: its data's place in the file, or zeros; checked."""
        entry = self.bmap[i]
        if entry >= DISCARDED:
            return _ZERO, None
        if entry >= self.blocks_in_image:
            raise CorruptImageError(f"block {i} has data block {entry}, beyond the "
                                    f"{self.blocks_in_image} of the image", self.filename,
                                    self.offset_bmap + 4 * i, "block map")
        return _DATA, self.offset_data + entry * self.cluster_size

    def _allocate(self, i: int, within: int, data: memoryview) -> None:
        new = self.blocks_allocated
        if new >= self.blocks_in_image:
            raise CorruptImageError(f"cannot allocate: the header counts {new} allocated "
                                    "blocks, all the image has", self.filename, ALLOCATED_AT,
                                    "header")
        if new <= self._max_used:
            raise CorruptImageError(f"cannot allocate: the header counts {new} allocated "
                                    f"blocks but data block {self._max_used} is in use",
                                    self.filename, ALLOCATED_AT, "header")
        # the rest of the block reads as zeros
        at = self.offset_data + new * self.cluster_size
        if self._file_end < 0:
            self._file_end = os.fstat(self.fd).st_size
        if at >= self._file_end:
            # past the end of the file: a hole reads as zeros once the file reaches the
            # block's end, so only the data is written (QEMU writes the block's zeros,
            # then the rest of its data over them: half as many bytes again)
            os.ftruncate(self.fd, at + self.cluster_size)
            pwritev_full(self.fd, at + within, [data])
        else:
            pwritev_full(self.fd, at, padded(self.cluster_size, within, data))
        self._file_end = max(self._file_end, at + self.cluster_size)
        self.blocks_allocated = new + 1
        self._max_used = new
        struct.pack_into("<I", self.header, ALLOCATED_AT, new + 1)
        os.pwrite(self.fd, self.header, 0)
        self.bmap[i] = new
        os.pwrite(self.fd, struct.pack("<I", new), self.offset_bmap + 4 * i)

    def check(self, repair: str | None = None) -> CheckResult:
        """The block map's consistency, as ``qemu-img check`` counts it (no repairs)."""
        if repair:
            raise UnsupportedOperation("vdi images cannot be repaired", self.filename)
        result = CheckResult(self.filename, self.format_name)
        owner: dict[int, int] = {}
        allocated = 0
        for block, entry in enumerate(self.bmap):
            if entry >= DISCARDED:
                continue
            if entry >= self.blocks_in_image:
                result.corruptions += 1
                result.messages.append(f"ERROR: block index {block} too large, is {entry}")
                continue
            allocated += 1
            if entry in owner:
                result.corruptions += 1
                # (qemu-img's message names the data block twice)
                result.messages.append(f"ERROR: block index {entry} also used by {entry}")
            else:
                owner[entry] = block
        if allocated != self.blocks_allocated:
            result.corruptions += 1
            result.messages.append(f"ERROR: allocated blocks mismatch, is {allocated}, "
                                   f"should be {self.blocks_allocated}")
        return result

    def file_holes_read_as_zero(self) -> bool:
        """QEMU's vdi answers BDRV_BLOCK_RECURSE for a static image: its blocks'
        holes in the file show as zeros in map."""
        return self.image_type == TYPE_STATIC

    def info(self) -> ImageInfo:
        return self._info(cluster_size=self.cluster_size)
