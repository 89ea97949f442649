"""Corrupt and hostile VHD images: clean errors naming the file and the offset."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from vmforge.block.driver import BlockError, CorruptImageError
from vmforge.testing.corrupt import flip_bits, fuzz
from vmforge_vpc import Vpc
from vmforge_vpc.layout import FOOTER_CHECKSUM_AT, checksum

MiB = 1 << 20


def _image(tmp_path: Path, **opts: object) -> Path:
    path = tmp_path / "seed.vhd"
    Vpc.create(str(path), 5 * MiB, force_size=True, **opts)
    with Vpc.open(str(path), readonly=False) as drv:
        drv.write(0, b"\x10" * 5000)
        drv.write(3 * MiB + 17, b"\x20" * 9000)
    return path


def _patch(path: Path, at: int, data: bytes, fix_footer_checksum: bool = False) -> None:
    raw = bytearray(path.read_bytes())
    raw[at:at + len(data)] = data
    if fix_footer_checksum:
        footer = 0 if raw[:8] == b"conectix" else len(raw) - 512
        struct.pack_into(">I", raw, footer + FOOTER_CHECKSUM_AT,
                         checksum(raw[footer:footer + 512], FOOTER_CHECKSUM_AT))
    path.write_bytes(raw)


def test_footer_checksum_verified(tmp_path: Path) -> None:
    img = _image(tmp_path)
    _patch(img, 40, struct.pack(">Q", 1 << 40))  # the original size
    with pytest.raises(CorruptImageError) as info:
        Vpc.open(str(img))
    assert info.value.offset == FOOTER_CHECKSUM_AT and info.value.table == "footer"
    assert "seed.vhd" in str(info.value) and "checksum" in str(info.value)


def test_dynamic_header_checksum_verified(tmp_path: Path) -> None:
    img = _image(tmp_path)
    _patch(img, 512 + 28, struct.pack(">I", 7))  # max table entries
    with pytest.raises(CorruptImageError, match="dynamic disk header checksum") as info:
        Vpc.open(str(img))
    assert info.value.offset == 512 + 36


def test_fixed_footer_at_the_end(tmp_path: Path) -> None:
    img = _image(tmp_path, subformat="fixed")
    _patch(img, 5 * MiB + 60, struct.pack(">I", 3), fix_footer_checksum=True)
    with pytest.raises(CorruptImageError, match="disk type 3") as info:
        Vpc.open(str(img))
    assert info.value.offset == 5 * MiB + 60


def test_truncated_image_names_the_table(tmp_path: Path) -> None:
    img = _image(tmp_path)
    raw = img.read_bytes()
    img.write_bytes(raw[:len(raw) - 2 * MiB])
    with pytest.raises(CorruptImageError, match="truncated") as info:
        Vpc.open(str(img))
    assert info.value.table == "BAT" and info.value.offset == 1536


def test_bat_entry_into_the_headers(tmp_path: Path) -> None:
    img = _image(tmp_path)
    _patch(img, 1536, struct.pack(">I", 2))  # block 0's bitmap in the dynamic header
    with Vpc.open(str(img)) as drv, pytest.raises(CorruptImageError) as info:
        drv.read(0, 512)
    assert info.value.offset == 1536 and info.value.table == "BAT"


def test_too_large_and_not_a_vhd(tmp_path: Path) -> None:
    with pytest.raises(BlockError, match="2040 GiB"):
        Vpc.create(str(tmp_path / "big.vhd"), 2041 << 30)
    assert not (tmp_path / "big.vhd").exists()
    junk = tmp_path / "junk"
    junk.write_bytes(b"x" * 4096)
    with pytest.raises(BlockError, match="not a VHD"):
        Vpc.open(str(junk))
    with pytest.raises(ValueError, match="subformat"):
        Vpc.create(str(tmp_path / "x.vhd"), MiB, subformat="differencing")


@pytest.mark.parametrize("subformat", ["dynamic", "fixed"])
def test_fuzz_flipped_header_bytes(tmp_path: Path, subformat: str) -> None:
    """300 images with bytes of the footer, header and BAT flipped: each opens and
    reads, or fails with a BlockError; nothing else escapes."""
    seed = _image(tmp_path, subformat=subformat).read_bytes()
    footer = 0 if subformat == "dynamic" else len(seed) - 512
    hot = [footer + i for i in range(512)]
    if subformat == "dynamic":
        hot += list(range(512, 1536 + 64))
    rng = random.Random(subformat)

    def mutate(k: int, raw: bytearray) -> None:
        flip_bits(raw, hot, 1 + k % 3, rng)
        if k % 2:  # half keep a valid footer checksum, to get past it
            struct.pack_into(">I", raw, footer + FOOTER_CHECKSUM_AT,
                             checksum(raw[footer:footer + 512], FOOTER_CHECKSUM_AT))

    outcomes = fuzz(Vpc, seed, tmp_path / "bad.vhd", mutate, rounds=300)
    assert outcomes["refused"] > 50 and outcomes["opened"] > 10, outcomes
