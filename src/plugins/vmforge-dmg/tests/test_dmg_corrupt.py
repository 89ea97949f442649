"""Corrupt and fuzzed dmg images fail with one clear error naming the file and
the offset; unsupported chunk types and foreign files are refused."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
from dmg_images import build_dmg

from vmforge.block.driver import BlockError, CorruptImageError
from vmforge.testing.corrupt import flip_bits, fuzz, overwrite_fields, patch_file
from vmforge.testing.images import mixed_bytes
from vmforge_dmg import Dmg
from vmforge_dmg.layout import ADC, LZFSE, ZLIB

MiB = 1 << 20


def _image(tmp_path: Path, **kw: object) -> tuple[Path, bytes]:
    data = mixed_bytes(MiB, seed=9, piece=32768)
    img = tmp_path / "c.dmg"
    build_dmg(img, data, **kw)  # type: ignore[arg-type]
    return img, data


@pytest.mark.parametrize("field,value,match", [
    (0x18, 1 << 40, "data fork"),
    (0xD8, 1 << 40, "property list outside"),
    (0x28, 1 << 40, "resource fork outside"),
    (0x1EC, 4096, "cover 2048 sectors of 4096"),
    (0x1EC, 1 << 60, "too large"),
])
def test_corrupt_trailer_names_file_and_offset(tmp_path: Path, field: int, value: int,
                                               match: str) -> None:
    img, _ = _image(tmp_path)
    koly = img.stat().st_size - 512
    patch_file(img, koly + field, struct.pack(">Q", value))
    with pytest.raises(CorruptImageError, match=match) as info:
        Dmg.open(str(img))
    assert info.value.offset == koly + field and "c.dmg" in str(info.value)


def test_corrupt_chunk_data_named_by_its_offset(tmp_path: Path) -> None:
    img, data = _image(tmp_path, compression="zlib")
    with Dmg.open(str(img)) as drv:
        first = next(c for c in drv.table.chunks if c.type == ZLIB)
    patch_file(img, first.offset + 10, b"\xff" * 16)
    with Dmg.open(str(img)) as drv:
        with pytest.raises(CorruptImageError) as info:
            drv.read(first.sector * 512, 512)
        assert info.value.offset == first.offset and info.value.table == "data fork"
        assert "c.dmg" in str(info.value) and "zlib" in str(info.value)
        result = drv.check()
        assert result.corruptions == 1 and result.messages[0].startswith("ERROR")
        # the other chunks still read
        other = next(c for c in drv.table.chunks if c.sector > first.sector + first.count)
        at = other.sector * 512
        assert drv.read(at, 512) == data[at:at + 512]


def test_resource_fork_entry_named_by_its_offset(tmp_path: Path) -> None:
    img, _ = _image(tmp_path, compression="zlib", resource_fork=True)
    raw = img.read_bytes()
    mish = raw.index(b"mish")
    entry = mish + 204   # the first chunk: its sector count becomes huge
    patch_file(img, entry + 16, struct.pack(">Q", 1 << 20))
    with pytest.raises(CorruptImageError, match="at most 64 MiB") as info:
        Dmg.open(str(img))
    assert info.value.offset == entry and info.value.table == "chunk table"


def test_adc_and_foreign_files_refused(tmp_path: Path) -> None:
    img, _ = _image(tmp_path, chunk_types=lambda k, chunk: ADC if k == 3 else ZLIB)
    with pytest.raises(BlockError, match="chunk type adc is not supported"):
        Dmg.open(str(img))
    other = tmp_path / "x.img"
    other.write_bytes(bytes(4096))
    with pytest.raises(BlockError, match="no UDIF trailer"):
        Dmg.open(str(other))
    assert Dmg.probe(b"", str(other)) == 0 and Dmg.probe(b"", str(tmp_path / "none")) == 0
    other.write_bytes(b"koly")
    with pytest.raises(BlockError, match="shorter than"):
        Dmg.open(str(other))


def test_fuzz_trailer_and_property_list(tmp_path: Path) -> None:
    img, _ = _image(tmp_path, compression="zlib")
    seed = img.read_bytes()
    koly = len(seed) - 512
    xml = seed.index(b"<?xml")
    data = seed.index(b"<data>", xml) + 6
    hot = list(range(koly, koly + 512)) + list(range(data, data + 400))
    rng = random.Random(3)
    outcomes = fuzz(Dmg, seed, tmp_path / "bad.dmg",
                    lambda k, raw: flip_bits(raw, hot, 1 + k % 3, rng), rounds=300)
    assert outcomes["refused"] > 50 and outcomes["opened"] > 10, outcomes


def test_fuzz_resource_fork_tables(tmp_path: Path) -> None:
    img, _ = _image(tmp_path, compression="bzip2", resource_fork=True)
    seed = img.read_bytes()
    mish = seed.index(b"mish")
    span = len(seed)
    rng = random.Random(4)

    def mutate(k: int, raw: bytearray) -> None:
        if k % 2:
            flip_bits(raw, list(range(mish - 20, span)), 1 + k % 3, rng)
        else:   # 64-bit fields of the table set to odd values
            at = mish + 204 + 40 * rng.randrange(8) + rng.choice((8, 16, 24, 32))
            raw[at:at + 8] = struct.pack(">Q", rng.choice((0, 1, 1 << 17, 1 << 40, 2**64 - 1)))

    outcomes = fuzz(Dmg, seed, tmp_path / "bad.dmg", mutate, rounds=200)
    assert outcomes["refused"] > 40 and outcomes["opened"] > 10, outcomes


def test_fuzz_overwritten_fields(tmp_path: Path) -> None:
    img, _ = _image(tmp_path, compression="lzfse")
    seed = img.read_bytes()
    rng = random.Random(5)
    koly = len(seed) - 512

    def mutate(k: int, raw: bytearray) -> None:
        tail = bytearray(raw[koly:])
        overwrite_fields(tail, 1 + k % 2, 512, rng, ">Q",
                         lambda: (0, 512, koly, koly + 1, 1 << 62))
        raw[koly:] = tail

    outcomes = fuzz(Dmg, seed, tmp_path / "bad.dmg", mutate, rounds=200)
    assert outcomes["refused"] > 20 and outcomes["opened"] > 10, outcomes


def test_lzfse_blocks_claiming_too_much_refused_before_decompressing(tmp_path: Path) -> None:
    import lzfse

    from vmforge_dmg.layout import lzfse_raw_size

    for data in (bytes(MiB), mixed_bytes(300000, seed=2, piece=4096), b"abcabd" * 20):
        assert lzfse_raw_size(lzfse.compress(data)) == len(data)
    img, _ = _image(tmp_path, compression="lzfse")
    with Dmg.open(str(img)) as drv:
        chunk = next(c for c in drv.table.chunks if c.type == LZFSE)
    stored = img.read_bytes()[chunk.offset:chunk.offset + chunk.length]
    assert stored[:4] in (b"bvx2", b"bvx-", b"bvxn")
    patch_file(img, chunk.offset + 4, struct.pack("<I", 1 << 30))   # a bomb's claim
    with Dmg.open(str(img)) as drv, pytest.raises(CorruptImageError,
                                                   match="lzfse blocks hold") as info:
        drv.read(chunk.sector * 512, 512)
    assert info.value.offset == chunk.offset
