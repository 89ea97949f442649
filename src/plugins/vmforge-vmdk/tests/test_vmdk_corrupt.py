"""Corrupt and fuzzed vmdk images: one clear error naming the file, the table and
the offset; never another exception."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from vmforge.block.driver import BlockError, CorruptImageError, ReadOnlyError
from vmforge.testing.corrupt import exercise, flip_bits, fuzz, overwrite_fields, patch_file
from vmforge.testing.qemu_tools import needs_qemu, qemu_img
from vmforge_vmdk import Vmdk
from vmforge_vmdk.layout import AT_GD, AT_GRAIN_OFFSET, SECTOR, Header

MiB = 1 << 20
GRAIN = 65536


def _image(tmp_path: Path, name: str = "seed.vmdk", **opts: object) -> Path:
    img = tmp_path / name
    Vmdk.create(str(img), 3 * MiB, **opts)
    with Vmdk.open(str(img), readonly=False) as drv:
        drv.write(100, b"\x11" * 5000)
        drv.write(GRAIN + 7, b"\x22" * 70000)
        drv.write(2 * MiB, b"\x33" * 512)
    return img


def _header(img: Path) -> Header:
    return Header.unpack(img.read_bytes()[:512])


def test_bad_grain_directory_entry_names_the_table_and_offset(tmp_path: Path) -> None:
    img = _image(tmp_path)
    h = _header(img)
    patch_file(img, h.gd_offset * SECTOR, struct.pack("<I", 1 << 30))
    with Vmdk.open(str(img)) as drv:
        with pytest.raises(CorruptImageError) as info:
            drv.read(0, 512)
        assert info.value.table == "grain directory"
        assert info.value.offset == h.gd_offset * SECTOR
        assert "seed.vmdk" in str(info.value)
        assert drv.check().corruptions >= 1


def test_bad_grain_table_entry_names_the_table_and_offset(tmp_path: Path) -> None:
    img = _image(tmp_path)
    with Vmdk.open(str(img)) as drv:
        ext = drv.extents[0]
        entry_at = ext.entry(1)[1]   # grain 1: written above
        assert ext.rgd is not None
        backup_at = ext.rgd[0] * SECTOR + 4
    for bad in (1 << 28, 3):   # past the end of the file; inside the tables
        patch_file(img, entry_at, struct.pack("<I", bad))
        patch_file(img, backup_at, struct.pack("<I", bad))   # both tables agree
        with Vmdk.open(str(img)) as drv:
            with pytest.raises(CorruptImageError) as info:
                drv.read(GRAIN, 512)
            assert info.value.table == "grain table" and info.value.offset == entry_at
            assert drv.read(0, 512)   # grain 0 is still fine
            assert drv.check().corruptions == 1


@needs_qemu
def test_grain_past_the_end_is_a_corruption_for_qemu_too(tmp_path: Path) -> None:
    img = _image(tmp_path)
    with Vmdk.open(str(img)) as drv:
        entry_at = drv.extents[0].entry(1)[1]
    patch_file(img, entry_at, struct.pack("<I", 1 << 28))
    r = qemu_img("check", "-f", "vmdk", str(img), check=False)
    assert r.returncode and "for sector 128 points after EOF" in r.stderr, r.stderr
    with Vmdk.open(str(img)) as drv:
        res = drv.check()
    assert res.corruptions == 2   # and the redundant table disagrees
    assert "for sector 128 points after EOF" in res.messages[0]


def test_redundant_table_that_differs_is_a_corruption(tmp_path: Path) -> None:
    img = _image(tmp_path)
    with Vmdk.open(str(img)) as drv:
        ext = drv.extents[0]
        assert ext.rgd is not None
        backup_at = ext.rgd[0] * SECTOR
        assert drv.check().clean
    patch_file(img, backup_at + 4, struct.pack("<I", 0))
    with Vmdk.open(str(img)) as drv:
        res = drv.check()
    assert res.corruptions == 1 and "redundant grain table 0" in res.messages[0]


def test_truncated_file_names_the_grain_offset(tmp_path: Path) -> None:
    img = _image(tmp_path)
    with open(img, "r+b") as f:
        f.truncate(4096)
    with pytest.raises(CorruptImageError) as info:
        Vmdk.open(str(img))
    assert info.value.offset == AT_GRAIN_OFFSET and "truncated" in str(info.value)


def test_grain_directory_past_the_end(tmp_path: Path) -> None:
    img = _image(tmp_path)
    patch_file(img, AT_GD, struct.pack("<Q", 1 << 40))
    with pytest.raises(CorruptImageError) as info:
        Vmdk.open(str(img))
    assert info.value.offset == AT_GD and info.value.table == "header"


def test_descriptor_without_cid(tmp_path: Path) -> None:
    img = _image(tmp_path)
    raw = img.read_bytes()
    at = raw.index(b"CID=")
    patch_file(img, at, b"XID=")
    patch_file(img, raw.index(b"parentCID="), b"parentXID=")
    with pytest.raises(CorruptImageError) as info:
        Vmdk.open(str(img))
    assert info.value.table == "descriptor" and info.value.offset == SECTOR


def test_descriptor_file_errors(tmp_path: Path) -> None:
    img = tmp_path / "d.vmdk"
    Vmdk.create(str(img), 3 * MiB, subformat="twoGbMaxExtentSparse")
    text = img.read_text()
    img.write_text(text.replace('"d-s001.vmdk"', '"d-s001.vmdk" 5'))
    with pytest.raises(CorruptImageError, match="Invalid extent line: RW 6144 SPARSE"):
        Vmdk.open(str(img))
    img.write_text(text.replace("d-s001.vmdk", "gone.vmdk"))
    with pytest.raises(BlockError, match=r"cannot open extent .*gone\.vmdk"):
        Vmdk.open(str(img))
    img.write_text(text.replace("twoGbMaxExtentSparse", "custom"))
    with pytest.raises(BlockError, match="Unsupported image type 'custom'"):
        Vmdk.open(str(img))
    img.write_text(text)
    patch_file(tmp_path / "d-s001.vmdk", 0, b"KDMX")
    with pytest.raises(BlockError, match=r"d-s001\.vmdk: extent not in VMDK sparse format"):
        Vmdk.open(str(img))
    img.write_text("not a vmdk at all\n")
    with pytest.raises(BlockError, match="not in VMDK format"):
        Vmdk.open(str(img))


def test_bad_compressed_grain(tmp_path: Path) -> None:
    img = _image(tmp_path, subformat="streamOptimized")
    with Vmdk.open(str(img)) as drv:
        sector = drv.extents[0].entry(0)[0]
    patch_file(img, sector * SECTOR + 12, b"\xde\xad\xbe\xef" * 4)
    with Vmdk.open(str(img)) as drv:
        with pytest.raises(CorruptImageError, match="does not inflate") as info:
            drv.read(0, 512)
        assert info.value.offset == sector * SECTOR
    patch_file(img, sector * SECTOR + 8, struct.pack("<I", 10 * GRAIN))
    with Vmdk.open(str(img)) as drv:
        with pytest.raises(CorruptImageError, match="compressed grain of"):
            drv.read(0, 512)


def test_version_3_uncompressed_is_read_only(tmp_path: Path) -> None:
    img = _image(tmp_path)
    patch_file(img, 4, struct.pack("<I", 3))
    with pytest.raises(ReadOnlyError, match="version 3"):
        Vmdk.open(str(img), readonly=False)
    assert exercise(Vmdk, img) == "opened"
    patch_file(img, 4, struct.pack("<I", 4))
    with pytest.raises(BlockError, match="unsupported VMDK version 4"):
        Vmdk.open(str(img))


@pytest.mark.parametrize("opts", [{}, {"subformat": "streamOptimized"},
                                  {"zeroed_grain": True}])
def test_header_and_table_fuzz(tmp_path: Path, opts: dict) -> None:
    """300 mutations of the header, the descriptor and the tables: BlockError or a
    working image, never another exception."""
    seed = _image(tmp_path, **opts)
    h = _header(seed)
    original = seed.read_bytes()
    tables = range(h.rgd_offset * SECTOR, h.grain_offset * SECTOR)
    hot = list(range(0, 80)) + list(range(SECTOR, SECTOR + 400)) + [
        t for t in tables if original[t]]
    rng = random.Random(5)

    def mutate(i: int, data: bytearray) -> None:
        if i % 2:
            flip_bits(data, hot, 1 + i % 3, rng)
        else:
            wide = i % 4 != 0
            overwrite_fields(data, 1 + i % 4, 80, rng, "<Q" if wide else "<I",
                             lambda: [0, 1, 2 ** 32 - 1, 128, rng.getrandbits(31)] + (
                                 [2 ** 63, 2 ** 64 - 1, rng.getrandbits(40)] if wide else []))

    outcomes = fuzz(Vmdk, original, tmp_path / "bad.vmdk", mutate, rounds=300)
    assert outcomes["refused"] > 30 and outcomes["opened"] > 30, outcomes


def test_descriptor_file_fuzz(tmp_path: Path) -> None:
    seed = tmp_path / "d.vmdk"
    Vmdk.create(str(seed), 3 * MiB, subformat="twoGbMaxExtentSparse")
    Vmdk.create(str(tmp_path / "f.vmdk"), MiB, subformat="monolithicFlat")
    text = seed.read_bytes()
    rng = random.Random(7)
    flat_line = b'RW 2048 FLAT "f-flat.vmdk" 0\n'

    def mutate(i: int, data: bytearray) -> None:
        if i % 5 == 0:   # a second extent, flat
            data[data.index(b"\n# The Disk"):0] = b"\n" + flat_line
        flip_bits(data, range(len(data)), 1 + i % 4, rng)

    outcomes = fuzz(Vmdk, text, tmp_path / "bad.vmdk", mutate, rounds=300)
    assert outcomes["refused"] > 30 and outcomes["opened"] > 30, outcomes
    # the extent files were never written
    with Vmdk.open(str(seed)) as drv:
        assert drv.read(0, drv.size) == bytes(drv.size)
