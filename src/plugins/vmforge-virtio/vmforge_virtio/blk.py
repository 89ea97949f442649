"""virtio-blk (virtio 1.2 section 5.2): a disk backed by a :mod:`vmforge.block` image.

``virtio-blk-device,drive=disk.qcow2[,format=qcow2][,readonly=on][,serial=S]``
``[,num-queues=N][,queue-size=256]``: the image opens with its backing chain
(:class:`~vmforge.block.BlockBackend`); or pass ``backend=`` an opened one.

Requests: IN, OUT, FLUSH, GET_ID (the serial), DISCARD and WRITE_ZEROES; a
read-only disk answers IOERR to writes.  Each request is checked on the
machine's thread (header, status byte, range), then runs on a worker thread
with ``preadv``/``pwritev`` straight into guest memory views; completions
come back in batches, one interrupt decision per queue.  A chain too short to
hold the header and the status byte is a device error, as in QEMU.
"""

from __future__ import annotations

import struct
import threading
from typing import Any, ClassVar

from vmforge.block import BlockBackend, BlockError, UnsupportedOperation
from vmforge.device import DeviceError, Prop
from vmforge.virtio import Chain, StateError, VirtioDevice, Virtqueue, spec

__all__ = ["VirtioBlk"]

# feature bits (section 5.2.3)
VIRTIO_BLK_F_SEG_MAX = 2
VIRTIO_BLK_F_GEOMETRY = 4
VIRTIO_BLK_F_RO = 5
VIRTIO_BLK_F_BLK_SIZE = 6
VIRTIO_BLK_F_SCSI = 7           # legacy only: QEMU offers it there (requests: UNSUPP)
VIRTIO_BLK_F_FLUSH = 9
VIRTIO_BLK_F_TOPOLOGY = 10
VIRTIO_BLK_F_CONFIG_WCE = 11
VIRTIO_BLK_F_MQ = 12
VIRTIO_BLK_F_DISCARD = 13
VIRTIO_BLK_F_WRITE_ZEROES = 14

# request types and status (section 5.2.6)
T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD, T_WRITE_ZEROES = 0, 1, 4, 8, 11, 13
S_OK, S_IOERR, S_UNSUPP = 0, 1, 2
SECTOR = 512
ID_BYTES = 20
HEADER = struct.Struct("<IIQ")  # type, reserved, sector
RANGE = struct.Struct("<QII")  # sector, num_sectors, flags
MAX_DISCARD_SECTORS = 0x3FFFFF  # QEMU's default limits
MAX_WRITE_ZEROES_SECTORS = 0x3FFFFF


_WCE_OFFSET = 32               # struct virtio_blk_config.writeback
#: the version of the record save_device_state gives
DEVICE_STATE_VERSION = 1


def _guess_geometry(backend: BlockBackend, sectors: int) -> tuple[int, int, int]:
    """QEMU's ``hd_geometry_guess`` for a disk with no geometry given (hw/block/hd-geometry.c):
    ``guess_disk_lchs`` from the MBR, falling back to ``guess_chs_for_size``."""
    try:
        mbr = bytearray(512)
        if sectors:
            backend.preadv(0, [memoryview(mbr)])
    except (BlockError, OSError):
        mbr = bytearray(512)
    if mbr[510:512] == b"\x55\xaa":
        for i in range(4):
            entry = mbr[0x1BE + 16 * i:0x1BE + 16 * (i + 1)]
            nr_sects = int.from_bytes(entry[12:16], "little")
            end_head, end_sector = entry[5], entry[6]
            if nr_sects and end_head:
                heads, secs = end_head + 1, end_sector & 63
                if secs == 0:
                    continue
                cylinders = sectors // (heads * secs)
                if not 1 <= cylinders <= 16383:
                    continue
                if heads > 16:          # a BIOS LBA translation: a standard geometry
                    break
                return cylinders, heads, secs
    return min(16383, max(2, sectors // (16 * 63))), 16, 63


class VirtioBlk(VirtioDevice):
    """A virtio block device."""

    name: ClassVar[str] = "virtio-blk-device"
    device_id: ClassVar[int] = spec.VIRTIO_ID_BLOCK

    drive = Prop(str, "", "image file (opened with its backing chain)")
    format = Prop(str, "", "image format (empty: probe)")
    readonly = Prop(bool, False, "read-only disk (VIRTIO_BLK_F_RO)")
    serial = Prop(str, "", "what GET_ID answers (its first 20 bytes, as QEMU)")
    num_queues = Prop(int, 1, "request queues (VIRTIO_BLK_F_MQ when more than 1)")
    queue_size = Prop(int, 256, "size of each queue")
    seg_max = Prop(int, 0, "segments per request (0: queue size - 2, as QEMU)")
    logical_block_size = Prop(int, SECTOR, "blk_size in the config space")
    discard = Prop(bool, True, "offer DISCARD")
    write_zeroes = Prop(bool, True, "offer WRITE_ZEROES")
    cache = Prop(str, "writeback", "cache mode of the image (unsafe: no fsync on flush)")
    inline_reads = Prop(bool, True, "answer reads the host has cached at once, without a "
                                    "worker thread (preadv2 RWF_NOWAIT)")

    def __init__(self, backend: BlockBackend | None = None, **props: Any) -> None:
        super().__init__(**props)
        if not 1 <= self.num_queues <= 64:
            raise DeviceError(f"{self.name}: num-queues={self.num_queues} is not in 1..64")
        if self.logical_block_size < SECTOR or self.logical_block_size & (
                self.logical_block_size - 1):
            raise DeviceError(f"{self.name}: logical_block_size must be a power of 2 >= 512")
        self._own_backend = backend is None
        #: the write cache (CONFIG_WCE): on unless the driver turns it off
        self.writeback = True
        self._geometry: tuple[int, int, int] | None = None
        if backend is None:
            if not self.drive:
                raise DeviceError(f"{self.name}: needs drive=FILE (or a backend)")
            try:
                backend = BlockBackend.open(self.drive, self.format or None,
                                            readonly=self.readonly, cache=self.cache,
                                            guessed_raw=True,    # QEMU's -hda disk.img
                                            persistent_bitmaps=True)
            except (BlockError, OSError) as exc:
                raise DeviceError(f"{self.name}: {exc}") from exc
        self.backend = backend
        self._stat_lock = threading.Lock()  # workers count I/O errors
        self.stats.update(reads=0, reads_inline=0, writes=0, flushes=0, discards=0, write_zeroes=0,
                          get_ids=0, io_errors=0, unsupported=0)

    # -- what the device offers ------------------------------------------------------------

    def queue_max_sizes(self) -> list[int]:
        return [self.queue_size] * self.num_queues

    @property
    def read_only(self) -> bool:
        return self.readonly or self.backend.readonly

    @property
    def capacity(self) -> int:
        """The disk's size in 512-byte sectors."""
        return self.backend.size // SECTOR

    def device_features_bits(self) -> int:
        """QEMU 7.2's set (``virtio_blk_get_features``): seg_max, geometry, topology,
        blk_size, flush (WCE), config-wce, and on the legacy interface SCSI."""
        bits = (1 << VIRTIO_BLK_F_SEG_MAX | 1 << VIRTIO_BLK_F_GEOMETRY
                | 1 << VIRTIO_BLK_F_TOPOLOGY | 1 << VIRTIO_BLK_F_BLK_SIZE
                | 1 << VIRTIO_BLK_F_FLUSH | 1 << VIRTIO_BLK_F_CONFIG_WCE)
        if self.legacy:
            bits |= 1 << VIRTIO_BLK_F_SCSI
        if self.read_only:
            bits |= 1 << VIRTIO_BLK_F_RO
        if self.num_queues > 1:
            bits |= 1 << VIRTIO_BLK_F_MQ
        if self.discard and not self.read_only:
            bits |= 1 << VIRTIO_BLK_F_DISCARD
        if self.write_zeroes and not self.read_only:
            bits |= 1 << VIRTIO_BLK_F_WRITE_ZEROES
        return bits

    def device_features(self) -> int:
        # QEMU clears ANY_LAYOUT for a legacy virtio-blk (its header and status must
        # stay in descriptors of their own there)
        return super().device_features() & ~(1 << spec.VIRTIO_F_ANY_LAYOUT)

    @property
    def geometry(self) -> tuple[int, int, int]:
        """(cylinders, heads, sectors) as QEMU guesses them (``hd_geometry_guess``):
        from an MBR's partition table when there is one, else 16 heads and 63
        sectors with cylinders from the size (2..16383)."""
        if self._geometry is None:
            self._geometry = _guess_geometry(self.backend, self.capacity)
        return self._geometry

    def reset_device(self) -> None:
        super().reset_device()
        self.writeback = True       # QEMU: back to the drive's own cache mode

    def save_device_state(self) -> dict[str, Any]:
        return {"version": DEVICE_STATE_VERSION, "writeback": self.writeback}

    def check_device_state(self, state: dict[str, Any]) -> None:
        if set(state) != {"version", "writeback"}:
            raise StateError(f"{self.name}: device state has fields {sorted(state)}")
        if state["version"] != DEVICE_STATE_VERSION:
            raise StateError(f"{self.name}: device state version {state['version']!r} "
                             f"(this device reads {DEVICE_STATE_VERSION})")
        if type(state["writeback"]) is not bool:
            raise StateError(f"{self.name}: writeback must be a bool")

    def apply_device_state(self, state: dict[str, Any]) -> None:
        self.writeback = state["writeback"]

    def write_config(self, offset: int, data: bytes) -> None:
        """CONFIG_WCE: the driver turns the write cache off (0) or on at offset 32;
        off, every write is made stable before it completes, as QEMU does."""
        if offset <= _WCE_OFFSET < offset + len(data):
            self.writeback = data[_WCE_OFFSET - offset] != 0

    @property
    def segments_max(self) -> int:
        return self.seg_max or max(1, self.queue_size - 2)

    def config_bytes(self) -> bytes:
        """``struct virtio_blk_config`` as far as QEMU 7.2 sizes it: to ``num_queues``
        (36 bytes), to the discard fields (48) with DISCARD, to
        ``write_zeroes_may_unmap`` (57) with WRITE_ZEROES."""
        per_block = self.logical_block_size // SECTOR
        features = self.device_features_bits()
        size = 57 if features >> VIRTIO_BLK_F_WRITE_ZEROES & 1 else (
            48 if features >> VIRTIO_BLK_F_DISCARD & 1 else 36)
        return struct.pack(
            "<QIIHBBIBBHIBBHIIIIIB3xIII",
            self.capacity, 0, self.segments_max,  # size_max: not offered
            *self.geometry,
            self.logical_block_size,
            0, 0, 0, 0,  # topology: physical_block_exp, alignment, min_io, opt_io (QEMU's)
            int(self.writeback), 0, self.num_queues,  # writeback, unused, num_queues
            MAX_DISCARD_SECTORS, 1, per_block,
            MAX_WRITE_ZEROES_SECTORS, 1, 1,
            0, 0, 0)[:size]  # secure erase: not offered

    # -- requests ----------------------------------------------------------------------------

    def on_notify(self, queue: Virtqueue) -> None:
        for chain in queue.pop_available():
            self._submit(queue, chain)
        queue.notify_guest()  # requests answered at once (errors, GET_ID)

    def restart(self, queue: Virtqueue, chain: Chain) -> None:
        self._submit(queue, chain)

    def _submit(self, queue: Virtqueue, chain: Chain) -> None:
        if chain.readable_len < HEADER.size or chain.writable_len < 1:
            self.virtio_error("request without header or status byte", queue=queue,
                              desc=chain.head)
            return
        rtype, _reserved, sector = HEADER.unpack(chain.read(0, HEADER.size))
        self.stats["requests"] += 1
        data_in = chain.writable_len - 1  # writable bytes before the status byte
        data_out = chain.readable_len - HEADER.size
        if rtype == T_IN:
            if not self._range_ok(sector, data_in):
                self._finish(queue, chain, S_IOERR)
                return
            self.stats["reads"] += 1
            self.stats["bytes_read"] += data_in
            if data_in and self._read_cached(chain, sector, data_in):
                self.stats["reads_inline"] += 1
                self._finish(queue, chain, S_OK)   # answered on this thread
                return
            self.run_in_thread(queue, chain, lambda c: self._read(c, sector, data_in))
        elif rtype == T_OUT:
            if self.read_only or not self._range_ok(sector, data_out):
                self._finish(queue, chain, S_IOERR)
                return
            self.stats["writes"] += 1
            self.stats["bytes_written"] += data_out
            self.run_in_thread(queue, chain, lambda c: self._write(c, sector, data_out))
        elif rtype == T_FLUSH:
            self.stats["flushes"] += 1
            self.run_in_thread(queue, chain, self._flush)
        elif rtype == T_GET_ID:
            self.stats["get_ids"] += 1
            ident = self.serial.encode()[:ID_BYTES].ljust(min(ID_BYTES, data_in), b"\0")
            n = min(len(ident), data_in)
            chain.write(ident[:n])
            self._finish(queue, chain, S_OK)
        elif rtype in (T_DISCARD, T_WRITE_ZEROES):
            self._submit_ranges(queue, chain, rtype, data_out)
        else:
            self.stats["unsupported"] += 1
            self._finish(queue, chain, S_UNSUPP)

    def _submit_ranges(self, queue: Virtqueue, chain: Chain, rtype: int, length: int) -> None:
        zeroes = rtype == T_WRITE_ZEROES
        offered = self.has_feature(VIRTIO_BLK_F_WRITE_ZEROES if zeroes else VIRTIO_BLK_F_DISCARD)
        if not offered:
            self.stats["unsupported"] += 1
            self._finish(queue, chain, S_UNSUPP)
            return
        if self.read_only or length == 0 or length % RANGE.size or length // RANGE.size > 1:
            self._finish(queue, chain, S_IOERR if self.read_only else S_UNSUPP)
            return
        sector, count, flags = RANGE.unpack(chain.read(HEADER.size, RANGE.size))
        limit = MAX_WRITE_ZEROES_SECTORS if zeroes else MAX_DISCARD_SECTORS
        if flags & ~(1 if zeroes else 0):  # only WRITE_ZEROES has a flag (unmap)
            self._finish(queue, chain, S_UNSUPP)
            return
        if count > limit or not self._range_ok(sector, count * SECTOR):
            self._finish(queue, chain, S_IOERR)
            return
        self.stats["write_zeroes" if zeroes else "discards"] += 1
        self.run_in_thread(queue, chain,
                           lambda c: self._ranges(c, zeroes, sector, count, bool(flags & 1)))

    def _range_ok(self, sector: int, length: int) -> bool:
        """QEMU's ``virtio_blk_sect_range_ok``: block-aligned and inside the disk."""
        per_block = self.logical_block_size // SECTOR
        if sector % per_block or length % self.logical_block_size:
            return False
        return sector * SECTOR + length <= self.backend.size

    def _finish(self, queue: Virtqueue, chain: Chain, status: int) -> None:
        """Answer at once (on the machine's thread), without I/O.  The used length
        is every writable byte, whatever the request and status, as QEMU reports
        it (``virtio_blk_req_complete``: ``in_len``)."""
        chain.write(bytes([status]), chain.writable_len - 1)
        if status == S_IOERR:
            self.stats["io_errors"] += 1
        queue.push_used(chain, chain.writable_len)

    def _read_cached(self, chain: Chain, sector: int, length: int) -> bool:
        """Data the host has in its page cache is read at once, here, without the
        two thread hand-offs of a worker (preadv2 with RWF_NOWAIT, where the format
        allows it); anything that would wait goes to a worker."""
        if not self.inline_reads:
            return False
        try:
            return self.backend.preadv_nowait(sector * SECTOR,
                                              chain.writable_views(0, length))
        except (BlockError, OSError):
            return False        # the worker's read reports the error

    # -- on the worker threads ----------------------------------------------------------------

    def _status(self, chain: Chain, status: int) -> int:
        chain.write(bytes([status]), chain.writable_len - 1)
        if status == S_IOERR:
            with self._stat_lock:
                self.stats["io_errors"] += 1
        return chain.writable_len                   # (as _finish)

    def _read(self, chain: Chain, sector: int, length: int) -> int:
        try:
            if length:
                self.backend.preadv(sector * SECTOR, chain.writable_views(0, length))
        except (BlockError, OSError):
            return self._status(chain, S_IOERR)
        return self._status(chain, S_OK)

    def _write(self, chain: Chain, sector: int, length: int) -> int:
        try:
            if length:
                self.backend.pwritev(sector * SECTOR, chain.readable_views(HEADER.size, length))
                if not self.writeback:          # write cache off (CONFIG_WCE)
                    self.backend.flush()
        except (BlockError, OSError):
            return self._status(chain, S_IOERR)
        return self._status(chain, S_OK)

    def _flush(self, chain: Chain) -> int:
        try:
            self.backend.flush()
        except (BlockError, OSError):
            return self._status(chain, S_IOERR)
        return self._status(chain, S_OK)

    def _ranges(self, chain: Chain, zeroes: bool, sector: int, count: int, unmap: bool) -> int:
        try:
            if zeroes:
                self.backend.write_zeroes(sector * SECTOR, count * SECTOR, unmap)
            else:
                self.backend.discard(sector * SECTOR, count * SECTOR)
        except UnsupportedOperation:
            if zeroes:
                return self._status(chain, S_IOERR)
        except (BlockError, OSError):
            return self._status(chain, S_IOERR)
        return self._status(chain, S_OK)

    # -- life cycle ------------------------------------------------------------------------------

    def unrealize(self) -> None:
        super().unrealize()
        if self._own_backend and not self.backend.closed:
            self.backend.close()

    def statistics(self) -> dict[str, int]:
        out = super().statistics()
        out["capacity"] = self.capacity
        return out
