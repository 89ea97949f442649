"""Bochs images built from the layout: vmforge reads what qemu-img reads; corrupt
and fuzzed headers fail cleanly."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
from bochs_images import build_bochs

from vmforge.block.driver import CorruptImageError
from vmforge.testing.corrupt import flip_bits, fuzz
from vmforge.testing.images import mixed_bytes
from vmforge.testing.qemu_tools import assert_reads_as_qemu_img, needs_qemu
from vmforge_bochs import Bochs

MiB = 1 << 20


@needs_qemu
@pytest.mark.parametrize("extent,version", [(4096, 2), (65536, 1), (1 << 20, 2)])
def test_reads_what_qemu_img_reads(tmp_path: Path, extent: int, version: int) -> None:
    data = bytearray(mixed_bytes(3 * MiB + 1536, seed=extent, piece=8192))
    data[5000:5003] = b"odd"   # a sector with data next to zero sectors
    img = tmp_path / "d.bochs"
    build_bochs(img, data, extent=extent, version=version)
    assert_reads_as_qemu_img(Bochs, img, "bochs", data, tmp_path)


def test_corrupt_fields_name_file_and_offset(tmp_path: Path) -> None:
    img = tmp_path / "c.bochs"
    build_bochs(img, mixed_bytes(MiB))
    raw = bytearray(img.read_bytes())
    for at, value, match in ((80, 3000, "power of two"), (72, 0x200000, "too large"),
                             (72, 2, "too small"), (68, 1 << 30, "outside the file")):
        bad = bytearray(raw)
        struct.pack_into("<I", bad, at, value)
        img.write_bytes(bad)
        with pytest.raises(CorruptImageError, match=match) as info:
            Bochs.open(str(img))
        assert info.value.offset == at and "c.bochs" in str(info.value)
    bad = bytearray(raw)
    struct.pack_into("<I", bad, 512, 5000)   # a catalog entry past the end of the file
    img.write_bytes(bad)
    with Bochs.open(str(img)) as drv, pytest.raises(CorruptImageError) as info:
        drv.read(0, 512)
    assert info.value.table == "catalog" and info.value.offset == 512


def test_fuzz_flipped_header_bytes(tmp_path: Path) -> None:
    seed = tmp_path / "seed.bochs"
    build_bochs(seed, mixed_bytes(2 * MiB), extent=8192)
    raw = seed.read_bytes()
    hot = list(range(0, 96)) + list(range(512, 512 + 64))
    rng = random.Random(11)
    outcomes = fuzz(Bochs, raw, tmp_path / "bad.bochs",
                    lambda k, data: flip_bits(data, hot, 1 + k % 3, rng), rounds=300)
    assert outcomes["refused"] > 50 and outcomes["opened"] > 10, outcomes
