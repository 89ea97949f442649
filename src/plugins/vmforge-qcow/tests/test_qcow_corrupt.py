"""Corrupt and hostile qcow images: clean errors naming the file and the offset."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from vmforge.block.driver import BlockError, CorruptImageError
from vmforge.testing.corrupt import flip_bits, fuzz, patch_file
from vmforge_qcow import Qcow

MiB = 1 << 20
L1_AT = 48   # a qcow image without a backing file


def _image(tmp_path: Path) -> Path:
    path = tmp_path / "seed.qcow"
    Qcow.create(str(path), 5 * MiB)
    with Qcow.open(str(path), readonly=False) as drv:
        drv.write(0, b"\x10" * 5000)
        drv.write(3 * MiB + 17, b"\x20" * 9000)
        drv.write_compressed(2 * MiB, (b"squeeze " * 512)[:4096])
    return path


def _l2_entry_at(path: Path, cluster: int) -> int:
    raw = path.read_bytes()
    l1_index, l2_index = divmod(cluster, 512)
    (l2,) = struct.unpack_from(">Q", raw, L1_AT + 8 * l1_index)
    return l2 + 8 * l2_index


@pytest.mark.parametrize("at,data,match", [
    (4, struct.pack(">I", 2), "qcow2"),
    (32, b"\x08", "cluster size"),
    (33, b"\x0e", "L2 table size"),
    (36, struct.pack(">I", 1), "encrypted"),
    (24, struct.pack(">Q", 1), "too small"),
    (24, struct.pack(">Q", 1 << 62), "too large|outside the file"),
    (40, struct.pack(">Q", 1 << 40), "L1 table"),
    (16, struct.pack(">I", 5000), "backing file name"),
])
def test_header_fields_refused(tmp_path: Path, at: int, data: bytes, match: str) -> None:
    img = _image(tmp_path)
    if at == 16:  # a backing name length with an offset: past the end of the file
        patch_file(img, 8, struct.pack(">Q", 48))
    patch_file(img, at, data)
    with pytest.raises(BlockError, match=match) as info:
        Qcow.open(str(img))
    assert "seed.qcow" in str(info.value)


def test_bad_l1_entry_names_its_offset(tmp_path: Path) -> None:
    img = _image(tmp_path)
    patch_file(img, L1_AT, struct.pack(">Q", 1 << 40))
    with Qcow.open(str(img)) as drv, pytest.raises(CorruptImageError) as info:
        drv.read(0, 16)
    assert info.value.table == "L1 table" and info.value.offset == L1_AT


@pytest.mark.parametrize("cluster,entry,match", [
    (0, 4096 + 17, "unaligned"),
    (0, 0, None),                                   # unallocated now: zeros
    (2 * MiB // 4096, (1 << 63) | (100 << 51) | 8192, "does not inflate|inflates"),
    (2 * MiB // 4096, (1 << 63) | (4000 << 51) | (1 << 40), "outside"),
])
def test_bad_l2_entry_names_its_offset(tmp_path: Path, cluster: int, entry: int,
                                       match: str | None) -> None:
    img = _image(tmp_path)
    at = _l2_entry_at(img, cluster)
    patch_file(img, at, struct.pack(">Q", entry))
    with Qcow.open(str(img)) as drv:
        if match is None:
            assert drv.read(cluster * 4096, 4096) == bytes(4096)
            return
        with pytest.raises(CorruptImageError, match=match) as info:
            drv.read(cluster * 4096, 4096)
    assert info.value.table == "L2 table" and info.value.offset == at


def test_fuzz_flipped_header_bytes(tmp_path: Path) -> None:
    """400 images with bits of the header, the L1 table and the first L2 table
    flipped: each opens and reads, or fails with a BlockError; nothing else."""
    seed = _image(tmp_path).read_bytes()
    (l2,) = struct.unpack_from(">Q", seed, L1_AT)
    hot = list(range(48 + 24)) + list(range(l2, l2 + 8 * 16)) + list(
        range(l2 + 8 * 512 - 8 * 8, l2 + 8 * 512))
    rng = random.Random(5)
    outcomes = fuzz(Qcow, seed, tmp_path / "bad.qcow",
                    lambda k, raw: flip_bits(raw, hot, 1 + k % 3, rng), rounds=400)
    assert outcomes["refused"] > 50 and outcomes["opened"] > 10, outcomes
