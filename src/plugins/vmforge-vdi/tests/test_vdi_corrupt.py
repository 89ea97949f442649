"""Corrupt and hostile VDI images: clean errors naming the file and the offset."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from vmforge.block.driver import BlockError, CorruptImageError
from vmforge.testing.corrupt import flip_bits, fuzz, patch_file
from vmforge_vdi import Vdi
from vmforge_vdi.driver import ALLOCATED_AT

MiB = 1 << 20


def _image(tmp_path: Path, **opts: object) -> Path:
    path = tmp_path / "seed.vdi"
    Vdi.create(str(path), 5 * MiB, **opts)
    with Vdi.open(str(path), readonly=False) as drv:
        drv.write(0, b"\x10" * 5000)
        drv.write(3 * MiB + 17, b"\x20" * 9000)
    return path


@pytest.mark.parametrize("at,value,match", [
    (0x44, 0x00010000, "version 1.0"),
    (0x168, 1024, "sector size 1024"),
    (0x178, 65536, "block size 65536"),
    (0x170, 9 * MiB, "image bitmap has room"),
    (0x180, 0x40000000, "past the end of the file|too many blocks|room"),
    (0x154, 0x201, "block map offset"),
    (0x158, 0x200, "data offset"),
    (0x1A8, 1, "link UUID"),
])
def test_header_fields_refused(tmp_path: Path, at: int, value: int, match: str) -> None:
    img = _image(tmp_path)
    patch_file(img, at, struct.pack("<I", value))
    with pytest.raises(BlockError, match=match) as info:
        Vdi.open(str(img))
    assert "seed.vdi" in str(info.value)
    if isinstance(info.value, CorruptImageError):
        assert info.value.offset is not None


def test_block_map_entry_out_of_range_names_its_offset(tmp_path: Path) -> None:
    img = _image(tmp_path)
    patch_file(img, 0x200 + 4 * 3, struct.pack("<I", 77))
    with Vdi.open(str(img)) as drv:
        assert drv.read(0, 16) == b"\x10" * 16          # the rest still reads
        with pytest.raises(CorruptImageError) as info:
            drv.read(3 * MiB, 16)
        assert info.value.table == "block map" and info.value.offset == 0x200 + 12
        assert drv.check().corruptions == 2  # the entry, and the count it no longer matches


def test_bad_allocation_count_refuses_to_overwrite(tmp_path: Path) -> None:
    """A header count below the data blocks in use would hand out a used block."""
    img = _image(tmp_path)
    patch_file(img, ALLOCATED_AT, struct.pack("<I", 1))
    with Vdi.open(str(img), readonly=False) as drv:
        with pytest.raises(CorruptImageError, match="in use") as info:
            drv.write(2 * MiB, b"x")
        assert info.value.offset == ALLOCATED_AT
        assert drv.read(3 * MiB + 17, 9000) == b"\x20" * 9000


def test_too_large_refused(tmp_path: Path) -> None:
    with pytest.raises(BlockError, match="max supported"):
        Vdi.create(str(tmp_path / "big.vdi"), (0x3FFFFFFF << 20) + 512)
    assert not (tmp_path / "big.vdi").exists()


@pytest.mark.parametrize("static", [False, True])
def test_fuzz_flipped_header_bytes(tmp_path: Path, static: bool) -> None:
    """300 images with bits of the header and the block map flipped: each opens and
    reads, or fails with a BlockError; nothing else escapes."""
    seed = _image(tmp_path, static=static).read_bytes()
    hot = list(range(0x40, 0x54)) + list(range(0x154, 0x1C8)) + list(range(0x200, 0x220))
    rng = random.Random(int(static))
    outcomes = fuzz(Vdi, seed, tmp_path / "bad.vdi",
                    lambda k, raw: flip_bits(raw, hot, 1 + k % 3, rng), rounds=300)
    assert outcomes["refused"] > 50 and outcomes["opened"] > 10, outcomes
