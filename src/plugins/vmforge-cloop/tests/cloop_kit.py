"""Test helpers: cloop images built from their specification, the read-only kit."""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path
from typing import Any, ClassVar

import pytest

from vmforge.block.driver import (
    BlockDriver,
    BlockRangeError,
    ReadOnlyError,
    UnsupportedOperation,
)
from vmforge.testing.blockkit import ODD_WRITES, BlockDriverConformance

MAGIC = (b"#!/bin/sh\n#V2.0 Format\n"
         b"modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n")


def build_cloop(path: str | Path, data: bytes | bytearray, block_size: int = 65536,
                level: int = 6) -> None:
    """Write ``data`` as a cloop 2.0 image (the layout in QEMU's block/cloop.c): the
    shell header padded to 128 bytes, the block size and count, n+1 offsets, then
    each block as a zlib stream.  A short last block is padded with zeros."""
    n = -(-len(data) // block_size)
    blocks = [zlib.compress(bytes(data[i * block_size:(i + 1) * block_size])
                            .ljust(block_size, b"\0"), level) for i in range(n)]
    at = 128 + 8 + 8 * (n + 1)
    offsets = [at]
    for blk in blocks:
        offsets.append(offsets[-1] + len(blk))
    with open(path, "wb") as f:
        f.write(MAGIC.ljust(128, b"\0") + struct.pack(">II", block_size, n))
        f.write(struct.pack(f">{n + 1}Q", *offsets) + b"".join(blocks))


class ReadOnlyConformance(BlockDriverConformance):
    """The kit for a read-only format: images are built (``build``) from the kit's
    data instead of written; every write the kit would do is refused instead."""

    build: ClassVar[Any] = None

    @pytest.fixture
    def written(self, tmp_path: Path) -> tuple[str, bytearray]:
        model = bytearray(self.image_size)
        rng = random.Random(1)
        for off, n in ODD_WRITES:
            model[off:off + n] = rng.randbytes(n)
        path = str(tmp_path / "written")
        type(self).build(path, model)
        return path, model

    @pytest.fixture
    def image(self, tmp_path: Path) -> str:
        path = str(tmp_path / "empty")
        type(self).build(path, bytes(self.image_size))
        return path

    def _refuses_writes(self, cls: type[BlockDriver], path: str) -> None:
        with pytest.raises(ReadOnlyError) as info:
            cls.open(path, readonly=False)
        # (the message is in args: str() of a ReadOnlyError, an OSError with a
        # filename, shows only the file name)
        assert "read-only" in info.value.args[0] and path in info.value.args[0]

    @pytest.mark.parametrize("size", [512, 3 * (1 << 20) + 1536])
    def test_create_sizes_read_zeros(self, driver_cls: type[BlockDriver], tmp_path: Path,
                                     size: int) -> None:
        with pytest.raises(UnsupportedOperation):
            driver_cls.create(str(tmp_path / "new"), size)
        path = str(tmp_path / "sized")
        type(self).build(path, bytes(size))
        with driver_cls.open(path) as drv:
            assert drv.size == size and drv.read(0, size) == bytes(size)

    def test_vectored_io(self, driver_cls: type[BlockDriver],
                         written: tuple[str, bytearray]) -> None:
        path, model = written
        with driver_cls.open(path) as drv:
            bufs = [bytearray(n) for n in (1, 70002, 4096, 3)]
            drv.preadv(776, [memoryview(b) for b in bufs])
        assert b"".join(bufs) == model[776:776 + sum(map(len, bufs))]
        self._refuses_writes(driver_cls, path)

    def test_reopen_after_flush(self, driver_cls: type[BlockDriver],
                                written: tuple[str, bytearray]) -> None:
        self._refuses_writes(driver_cls, written[0])

    def test_overwrite_in_place(self, driver_cls: type[BlockDriver],
                                written: tuple[str, bytearray]) -> None:
        self._refuses_writes(driver_cls, written[0])

    def test_discard_zero_length_and_double_close(self, driver_cls: type[BlockDriver],
                                                  written: tuple[str, bytearray]) -> None:
        path, _ = written
        drv = driver_cls.open(path)
        assert drv.read(drv.size, 0) == b""
        assert list(drv.block_status(drv.size, 0)) == []
        drv.close()
        drv.close()

    @pytest.mark.parametrize("unmap", [False, True])
    def test_write_zeroes(self, driver_cls: type[BlockDriver],
                          written: tuple[str, bytearray], unmap: bool) -> None:
        self._refuses_writes(driver_cls, written[0])

    def test_truncate(self, driver_cls: type[BlockDriver],
                      written: tuple[str, bytearray]) -> None:
        self._refuses_writes(driver_cls, written[0])

    def test_out_of_range(self, driver_cls: type[BlockDriver], image: str) -> None:
        with driver_cls.open(image) as drv:
            with pytest.raises(BlockRangeError):
                drv.read(drv.size - 1, 2)
            with pytest.raises(BlockRangeError):
                drv.read(-1, 1)

    def test_compressed_writes_from_two_threads(self, driver_cls: type[BlockDriver],
                                                image: str) -> None:
        assert not driver_cls.supports_compressed_writes
        self._refuses_writes(driver_cls, image)

    def test_backing_file_copy_on_write(self, driver_cls: type[BlockDriver],
                                        written: tuple[str, bytearray],
                                        tmp_path: Path) -> None:
        assert not driver_cls.supports_backing
        with pytest.raises(UnsupportedOperation):
            driver_cls.create(str(tmp_path / "overlay"), self.image_size)
