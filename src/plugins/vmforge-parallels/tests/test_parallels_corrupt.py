"""Corrupt and hostile parallels images: one clean error naming the file and the offset."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from vmforge.block.driver import BlockError, CorruptImageError
from vmforge.testing.corrupt import fuzz, overwrite_fields, patch_file
from vmforge_parallels import Parallels

MiB = 1 << 20
CS = 4096


def _image(tmp_path: Path) -> Path:
    path = tmp_path / "seed.hds"
    Parallels.create(str(path), 2 * MiB, cluster_size=CS)   # 512 entries, data at 8 KiB
    with Parallels.open(str(path), readonly=False) as drv:
        drv.write(0, b"\x10" * 5000)
        drv.write(MiB + 17, b"\x20" * 9000)
    return path


@pytest.mark.parametrize("at,data,match", [
    (0, b"WithoutFreeSpacX", "not in parallels format"),
    (16, struct.pack("<I", 3), "version 3"),
    (28, struct.pack("<I", 0), "cluster size"),
    (28, struct.pack("<I", 1 << 30), "cluster size"),
    (32, struct.pack("<I", 1 << 30), "BAT of"),
    (32, struct.pack("<I", 10), "larger than its BAT"),   # (named at the disk size)
    (36, struct.pack("<Q", 1 << 40), "larger than its BAT"),
    (44, struct.pack("<I", 0x12345678), "in-use field"),
    (48, struct.pack("<I", 0), "data offset is zero"),
    (48, struct.pack("<I", 1), "data offset"),
    (48, struct.pack("<I", 12), "not a whole number of clusters"),
    (48, struct.pack("<I", 1 << 30), "data offset"),
    (56, struct.pack("<Q", 1 << 30), "format extension"),
])
def test_header_fields_refused(tmp_path: Path, at: int, data: bytes, match: str) -> None:
    img = _image(tmp_path)
    patch_file(img, at, data)
    with pytest.raises(BlockError, match=match) as info:
        Parallels.open(str(img))
    assert "seed.hds" in str(info.value)
    if isinstance(info.value, CorruptImageError):
        where = 36 if "larger than its BAT" in match else at
        assert info.value.offset == where and f"at offset {where:#x}" in str(info.value)


@pytest.mark.parametrize("entry", [1, 2 + 1000, 1 << 20, 3])
def test_bad_bat_entry_names_its_offset(tmp_path: Path, entry: int) -> None:
    img = _image(tmp_path)
    # entry 3: cluster 3 would share the data of cluster 256 (used twice)
    patch_file(img, 64 + 4 * 7, struct.pack("<I", entry))
    with pytest.raises(CorruptImageError) as info:
        Parallels.open(str(img))
    # (a cluster used twice is named at its second entry: cluster 256's)
    where = 64 + 4 * (256 if entry == 3 else 7)
    assert info.value.table == "BAT" and info.value.offset == where
    assert "seed.hds" in str(info.value)


def test_extension_images_open_read_only(tmp_path: Path) -> None:
    img = _image(tmp_path)
    with open(img, "ab") as f:
        f.write(bytes(CS))
    patch_file(img, 56, struct.pack("<Q", (img.stat().st_size - CS) // 512))
    with Parallels.open(str(img)) as drv:
        assert drv.read(0, 5000) == b"\x10" * 5000
        assert drv.check().clean   # the extension's cluster is not a leak
    with pytest.raises(BlockError, match="read-only"):
        Parallels.open(str(img), readonly=False)


def test_header_fuzz(tmp_path: Path) -> None:
    """300 mutations of the header and the BAT: BlockError or a working image."""
    original = _image(tmp_path).read_bytes()
    rng = random.Random(12)

    def mutate(i: int, data: bytearray) -> None:
        overwrite_fields(data, 1 + i % 5, 64 if i % 3 else 64 + 4 * 512, rng,
                         "<I" if i % 4 == 0 else None,
                         lambda: [0, 1, 2, 0xFFFFFFFF, 0x7FFFFFFF, rng.getrandbits(20)])

    fuzz(Parallels, original, tmp_path / "bad.hds", mutate, rounds=300)
