"""cloop images built from the layout: vmforge reads what qemu-img reads; corrupt
and fuzzed headers fail cleanly."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
from cloop_images import build_cloop

from vmforge.block.driver import CorruptImageError
from vmforge.testing.corrupt import flip_bits, fuzz
from vmforge.testing.images import mixed_bytes
from vmforge.testing.qemu_tools import assert_reads_as_qemu_img, needs_qemu
from vmforge_cloop import Cloop

MiB = 1 << 20


@needs_qemu
@pytest.mark.parametrize("block", [512, 65536, 256 * 1024])
def test_reads_what_qemu_img_reads(tmp_path: Path, block: int) -> None:
    data = bytearray(mixed_bytes(3 * MiB + 1536, seed=block, piece=8192))
    data += bytes(-len(data) % block)   # whole blocks
    img = tmp_path / "d.cloop"
    build_cloop(img, data, block_size=block)
    assert_reads_as_qemu_img(Cloop, img, "cloop", data, tmp_path)


def test_corrupt_fields_name_file_and_offset(tmp_path: Path) -> None:
    img = tmp_path / "c.cloop"
    build_cloop(img, mixed_bytes(MiB), block_size=65536)
    raw = bytearray(img.read_bytes())
    for at, fmt, value, match in ((128, ">I", 1000, "multiple of 512"),
                                  (128, ">I", 128 << 20, "at most 64 MiB"),
                                  (132, ">I", 1 << 28, "too many offsets"),
                                  (132, ">I", 1 << 20, "past the end"),
                                  (136 + 16, ">Q", 10, "monotonically"),
                                  (136 + 16, ">Q", 1 << 40, "compressed block size")):
        bad = bytearray(raw)
        struct.pack_into(fmt, bad, at, value)
        img.write_bytes(bad)
        with pytest.raises(CorruptImageError, match=match) as info:
            Cloop.open(str(img))
        assert info.value.offset == at and "c.cloop" in str(info.value)
    bad = bytearray(raw)
    bad[400] ^= 0xFF                          # inside block 0's stream
    img.write_bytes(bad)
    with Cloop.open(str(img)) as drv:
        assert drv.read(65536, 512) == mixed_bytes(MiB)[65536:66048]
        with pytest.raises(CorruptImageError, match="inflate") as info:
            drv.read(0, 512)
    assert info.value.table == "offsets" and info.value.offset == 136


def test_fuzz_flipped_header_bytes(tmp_path: Path) -> None:
    seed = tmp_path / "seed.cloop"
    build_cloop(seed, mixed_bytes(2 * MiB), block_size=65536)
    raw = seed.read_bytes()
    hot = list(range(80, 136 + 8 * 33)) + list(range(136 + 8 * 33, 136 + 8 * 33 + 64))
    rng = random.Random(11)
    outcomes = fuzz(Cloop, raw, tmp_path / "bad.cloop",
                    lambda k, data: flip_bits(data, hot, 1 + k % 3, rng), rounds=300)
    assert outcomes["refused"] > 50 and outcomes["opened"] > 10, outcomes
