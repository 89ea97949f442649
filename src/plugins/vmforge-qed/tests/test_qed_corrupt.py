"""Corrupt and hostile qed images: one clean error naming the file and the offset."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from vmforge.block.driver import BlockError, CorruptImageError
from vmforge.testing.corrupt import fuzz, overwrite_fields, patch_file
from vmforge_qed import Qed

MiB = 1 << 20
CS = 4096


def _image(tmp_path: Path, backing: bool = False) -> Path:
    path = tmp_path / "seed.qed"
    opts = {"backing_file": "base.raw", "backing_fmt": "raw"} if backing else {}
    Qed.create(str(path), 5 * MiB, cluster_size=CS, table_size=2, **opts)
    with Qed.open(str(path), readonly=False) as drv:
        drv.write(0, b"\x10" * 5000)
        drv.write(3 * MiB + 17, b"\x20" * 9000)
    return path


@pytest.mark.parametrize("at,data,match", [
    (0, b"QEE\0", "not in QED format"),
    (4, struct.pack("<I", 3000), "cluster size"),
    (4, struct.pack("<I", 1 << 30), "cluster size"),
    (8, struct.pack("<I", 3), "table size"),
    (8, struct.pack("<I", 32), "table size"),
    (12, struct.pack("<I", 0), "header size"),
    (12, struct.pack("<I", 1 << 20), "header size"),
    (16, struct.pack("<Q", 1 << 9), "unsupported feature"),
    (16, struct.pack("<Q", 4), "backing format flag without"),
    (40, struct.pack("<Q", CS + 1), "L1 table"),
    (40, struct.pack("<Q", 0), "L1 table"),
    (40, struct.pack("<Q", 1 << 40), "L1 table"),
    (48, struct.pack("<Q", 5 * MiB + 1), "image size"),
    (48, struct.pack("<Q", 1 << 62), "image size"),
])
def test_header_fields_refused(tmp_path: Path, at: int, data: bytes, match: str) -> None:
    img = _image(tmp_path)
    patch_file(img, at, data)
    with pytest.raises(BlockError, match=match) as info:
        Qed.open(str(img))
    assert "seed.qed" in str(info.value)
    if isinstance(info.value, CorruptImageError):
        assert info.value.offset == at and f"at offset {at:#x}" in str(info.value)


@pytest.mark.parametrize("at,data", [(56, struct.pack("<II", 64, 5000)),
                                     (56, struct.pack("<II", CS - 2, 8)),
                                     (64, b"\xff\xfe")])
def test_backing_name_refused(tmp_path: Path, at: int, data: bytes) -> None:
    img = _image(tmp_path, backing=True)
    patch_file(img, at, data)
    with pytest.raises(CorruptImageError, match="backing file name") as info:
        Qed.open(str(img))
    assert "seed.qed" in str(info.value)


def test_bad_l1_entry_names_the_table_and_offset(tmp_path: Path) -> None:
    img = _image(tmp_path)
    patch_file(img, CS, struct.pack("<Q", 12345))   # L1 entry 0: unaligned
    with Qed.open(str(img)) as drv:
        with pytest.raises(CorruptImageError) as info:
            drv.read(0, 512)
        assert info.value.table == "L1 table" and info.value.offset == CS
        assert "seed.qed" in str(info.value)
        assert drv.check().corruptions == 1


def test_bad_l2_entry_names_the_table_and_offset(tmp_path: Path) -> None:
    img = _image(tmp_path)
    with Qed.open(str(img)) as drv:
        entry_at = drv.l1[0] + 8 * 1   # cluster 1: 5000 bytes reach into it
    for bad in (1 << 50, 3 * CS + 5, 0x100):
        patch_file(img, entry_at, struct.pack("<Q", bad))
        with Qed.open(str(img)) as drv:
            with pytest.raises(CorruptImageError) as info:
                drv.read(CS, 512)
            assert info.value.table == "L2 table" and info.value.offset == entry_at
            assert list(drv.block_status(0, CS))   # cluster 0 still fine


def test_twice_referenced_cluster_is_a_corruption(tmp_path: Path) -> None:
    img = _image(tmp_path)
    with Qed.open(str(img)) as drv:
        l2 = drv.l1[0]
        first = drv.read_table(l2)[0]
    patch_file(img, l2 + 8 * 7, struct.pack("<Q", first))
    patch_file(img, 16, struct.pack("<Q", 2))   # and the need-check flag: a crash
    with Qed.open(str(img), readonly=False) as drv:   # checked at open: cannot repair
        assert drv.needs_check
        res = drv.check(repair="all")
        assert res.corruptions == 1 and any("overlaps" in m for m in res.messages)
    with Qed.open(str(img)) as drv:   # not repairable: the flag stays after close
        assert drv.needs_check


def test_header_fuzz(tmp_path: Path) -> None:
    """300 mutations of the first 128 bytes and of the tables: BlockError or a
    working image, never another exception."""
    original = _image(tmp_path, backing=True).read_bytes()
    rng = random.Random(11)

    def mutate(i: int, data: bytearray) -> None:
        overwrite_fields(data, 1 + i % 5, 128 if i % 3 else len(data), rng,
                         "<Q" if i % 4 == 0 else None,
                         lambda: [0, 1, 2 ** 63, 2 ** 64 - 1, CS, CS * 3, rng.getrandbits(40)])

    fuzz(Qed, original, tmp_path / "bad.qed", mutate, rounds=300)
