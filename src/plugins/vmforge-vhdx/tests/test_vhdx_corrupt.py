"""Corrupt and hostile VHDX images: refused where qemu-img refuses them, with one clear
error naming the file, the offset and the table; fuzzed headers give only clean errors."""

from __future__ import annotations

import json
import random
import shutil
import struct
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from vmforge.block.driver import BlockError, CorruptImageError
from vmforge.testing.corrupt import exercise, flip_bits, fuzz, overwrite_fields, patch_file
from vmforge.testing.qemu_tools import needs_qemu, qemu_img, qemu_io
from vmforge_vhdx import Vhdx
from vmforge_vhdx import layout as L
from vmforge_vhdx.log import build_entry

MiB = 1 << 20
BAT_AT, META_AT, LOG_AT = 2 * MiB, 3 * MiB, MiB        # where qemu-img puts them (1 MiB log)
ITEMS_AT = META_AT + 65536                              # file parameters, size, page 83, ...


def _image(tmp_path: Path, name: str = "seed.vhdx") -> Path:
    """3 MiB, 1 MiB blocks, made by qemu-img and written by qemu-io (blocks 0 and 2)."""
    img = tmp_path / name
    qemu_img("create", "-q", "-f", "vhdx", "-o", "block_size=1M", str(img), "3M")
    qemu_io(img, "write -P 0x10 0 5000", "write -P 0x20 2100000 9000", fmt="vhdx")
    return img


def _fix_region_checksum(img: Path) -> None:
    raw = bytearray(img.read_bytes()[L.REGION_TABLE_OFFSETS[0]:][:L.HEADER_BLOCK])
    L.set_checksum(raw)
    patch_file(img, L.REGION_TABLE_OFFSETS[0], bytes(raw))


def _rewrite_current_header(img: Path, **fields: object) -> None:
    with Vhdx.open(str(img)) as drv:
        at, header, block = (L.HEADER_OFFSETS[drv.current], drv.header,
                             bytearray(drv.header_blocks[drv.current]))
    replace(header, **fields).pack_into(block)
    patch_file(img, at, bytes(block))


def _qemu_refuses(img: Path) -> bool:
    return qemu_img("info", "-f", "vhdx", str(img), check=False).returncode != 0


def _region(img: Path) -> None:
    patch_file(img, L.REGION_TABLE_OFFSETS[0] + 1000, b"\1")


def _overlap(img: Path) -> None:      # the BAT moved onto the log
    patch_file(img, L.REGION_TABLE_OFFSETS[0] + 16 + 16, struct.pack("<Q", LOG_AT))
    _fix_region_checksum(img)


def _meta_sig(img: Path) -> None:
    patch_file(img, META_AT, b"METADATA")


def _block_size(img: Path) -> None:
    patch_file(img, ITEMS_AT, struct.pack("<I", 3 * MiB))


def _sector(img: Path) -> None:
    patch_file(img, ITEMS_AT + 8 + 8 + 16, struct.pack("<I", 1024))


def _huge(img: Path) -> None:
    patch_file(img, ITEMS_AT + 8, struct.pack("<Q", 1 << 50))


def _parent(img: Path) -> None:
    patch_file(img, ITEMS_AT + 4, struct.pack("<I", L.PARAMS_HAS_PARENT))


def _unknown_required(img: Path) -> None:
    entry = L.METADATA_ENTRY.pack(uuid.uuid4().bytes_le, 65536 + 200, 8, L.META_IS_REQUIRED, 0)
    patch_file(img, META_AT + 32 * 6, entry)
    patch_file(img, META_AT + 10, struct.pack("<H", 6))


def _log_version(img: Path) -> None:
    _rewrite_current_header(img, log_version=1)


def _bat_past_end(img: Path) -> None:
    patch_file(img, BAT_AT + 8, struct.pack("<Q", (64 * MiB) | L.PAYLOAD_FULLY_PRESENT))


def _bat_on_metadata(img: Path) -> None:
    patch_file(img, BAT_AT + 8, struct.pack("<Q", META_AT | L.PAYLOAD_FULLY_PRESENT))


@pytest.mark.parametrize("damage,match,offset", [
    (_region, "region table checksum", L.REGION_TABLE_OFFSETS[0] + 4),
    (_overlap, "the BAT at 0x100000 .* overlaps the log", L.REGION_TABLE_OFFSETS[0] + 16),
    (_meta_sig, "metadata table signature", META_AT),
    (_block_size, "block size 3145728", ITEMS_AT),
    (_sector, "logical sector size 1024", ITEMS_AT + 32),
    (_huge, "over 64 TiB", ITEMS_AT + 8),
    (_parent, "differencing|parent", None),
    (_unknown_required, "required metadata item 5 is unknown", None),
    (_log_version, "log version 1", None),
    (_bat_past_end, "BAT entry 1 start offset 67108864 points after end of file", BAT_AT + 8),
    (_bat_on_metadata, "overlaps the metadata region", BAT_AT + 8),
])
@needs_qemu
def test_refused_where_qemu_img_refuses(tmp_path: Path, damage, match: str,
                                        offset: int | None) -> None:
    img = _image(tmp_path)
    damage(img)
    assert _qemu_refuses(img)
    for readonly in (True, False):
        with pytest.raises(BlockError, match=match) as info:
            Vhdx.open(str(img), readonly=readonly)
        assert "seed.vhdx" in str(info.value)
        if offset is not None:
            assert isinstance(info.value, CorruptImageError) and info.value.offset == offset


@needs_qemu
def test_bad_bat_entries_counted_as_qemu_img_check_counts(tmp_path: Path) -> None:
    img = _image(tmp_path)
    _bat_past_end(img)
    patch_file(img, BAT_AT + 16, struct.pack("<Q", (32 * MiB) | L.PAYLOAD_FULLY_PRESENT))
    theirs = qemu_img("check", "--output", "json", "-f", "vhdx", str(img), check=False)
    with Vhdx.open(str(img), readonly=False, for_check=True) as drv:
        result = drv.check()
    assert theirs.returncode == 2
    assert result.corruptions == json.loads(theirs.stdout)["corruptions"] == 2
    errors = [line for line in theirs.stderr.splitlines() if "VHDX BAT entry" in line]
    assert sorted(f"ERROR: {e.split(': ', 1)[1]}" for e in errors) == sorted(result.messages)


@needs_qemu
def test_one_bad_header_the_other_is_used(tmp_path: Path) -> None:
    img = _image(tmp_path)
    qemu_img("convert", "-O", "raw", str(img), str(tmp_path / "a.raw"))
    with Vhdx.open(str(img)) as drv:
        current = drv.current
    patch_file(img, L.HEADER_OFFSETS[current] + 2000, b"\xff")   # its checksum is now wrong
    qemu_img("convert", "-O", "raw", str(img), str(tmp_path / "b.raw"))
    with Vhdx.open(str(img)) as drv:
        assert drv.current == 1 - current
        assert drv.read(0, drv.size) == (tmp_path / "a.raw").read_bytes()
    assert (tmp_path / "b.raw").read_bytes() == (tmp_path / "a.raw").read_bytes()
    patch_file(img, L.HEADER_OFFSETS[1 - current] + 2000, b"\xff")
    assert _qemu_refuses(img)
    with pytest.raises(CorruptImageError, match="No valid VHDX header") as info:
        Vhdx.open(str(img))
    assert info.value.offset == L.HEADER_OFFSETS[0] and info.value.table == "header"


@needs_qemu
def test_partially_present_block_is_an_error_on_read(tmp_path: Path) -> None:
    img = _image(tmp_path)
    patch_file(img, BAT_AT + 8, struct.pack("<Q", L.PAYLOAD_PARTIALLY_PRESENT))
    assert "error" in qemu_img("convert", "-O", "raw", str(img), str(tmp_path / "x.raw"),
                               check=False).stderr.lower()
    with Vhdx.open(str(img)) as drv:
        assert drv.read(0, 16) == b"\x10" * 16
        with pytest.raises(CorruptImageError, match="partially present") as info:
            drv.read(MiB, 16)
        assert info.value.offset == BAT_AT + 8 and info.value.table == "BAT"


# -- fuzzing ------------------------------------------------------------------------------

def _hot() -> list[int]:
    spans = [(8, 16)]                                   # past the file signature
    spans += [(at, at + 80) for at in L.HEADER_OFFSETS]
    spans += [(L.REGION_TABLE_OFFSETS[0], L.REGION_TABLE_OFFSETS[0] + 80)]
    spans += [(META_AT, META_AT + 32 * 6), (ITEMS_AT, ITEMS_AT + 40)]
    spans += [(BAT_AT, BAT_AT + 40)]
    return [i for a, b in spans for i in range(a, b)]


@needs_qemu
def test_fuzz_flipped_bits(tmp_path: Path) -> None:
    """Bits of the headers, the region table, the metadata and the BAT flipped: each image
    opens and reads, or fails with a BlockError; nothing else escapes."""
    seed = _image(tmp_path).read_bytes()
    rng = random.Random(1)
    hot = _hot()
    outcomes = fuzz(Vhdx, seed, tmp_path / "bad.vhdx",
                    lambda k, raw: flip_bits(raw, hot, 1 + k % 3, rng), rounds=300)
    assert outcomes["refused"] > 50 and outcomes["opened"] > 50, outcomes


@needs_qemu
def test_fuzz_fields_with_checksums_fixed(tmp_path: Path) -> None:
    """Fields of the current header and the region table set to odd values, their
    checksums made right again, so that the checks behind the checksums are reached."""
    seed = _image(tmp_path).read_bytes()
    with Vhdx.open(str(tmp_path / "seed.vhdx")) as drv:
        current = L.HEADER_OFFSETS[drv.current]
    rng = random.Random(2)
    odd = [0, 1, 4096, MiB, MiB + 1, 3 * MiB, 1 << 32, 1 << 47, (1 << 64) - 1]

    def mutate(k: int, raw: bytearray) -> None:
        base = current if k % 2 else L.REGION_TABLE_OFFSETS[0]
        part = bytearray(raw[base:base + (L.HEADER_SIZE if k % 2 else L.HEADER_BLOCK)])
        span = 80 if k % 2 else 16 + 64
        fmt, mask = rng.choice([("<Q", (1 << 64) - 1), ("<I", (1 << 32) - 1),
                                ("<H", (1 << 16) - 1)])
        overwrite_fields(part, 1 + k % 2, span, rng, fmt, lambda: [v & mask for v in odd])
        L.set_checksum(part)
        raw[base:base + len(part)] = part

    outcomes = fuzz(Vhdx, seed, tmp_path / "bad.vhdx", mutate, rounds=300)
    assert outcomes["refused"] > 50 and outcomes["opened"] > 20, outcomes


@needs_qemu
def test_fuzz_log_entries_replayed_or_refused(tmp_path: Path) -> None:
    """Log entries with odd lengths, counts, offsets and sequence numbers (their checksum
    right): a read-write open replays them or raises a BlockError, nothing else."""
    img = _image(tmp_path)
    seed = img.read_bytes()
    rng = random.Random(3)
    guid = uuid.uuid4().bytes_le
    size = len(seed)
    outcomes = {"opened": 0, "refused": 0}
    bad = tmp_path / "bad.vhdx"
    for k in range(120):
        entry = bytearray(build_entry(
            5, guid, [(BAT_AT, seed[BAT_AT:BAT_AT + 4096])], [(9 * MiB, 8192)],
            flushed_offset=size, last_offset=size))
        for _ in range(1 + k % 3):
            at = rng.choice([8, 12, 16, 24, 48, 56, 64 + 8, 64 + 16, 96 + 4, 96 + 8, 96 + 16])
            value = rng.choice([0, 1, 4095, 4096, 8192, MiB, 1 << 31, (1 << 32) - 1])
            struct.pack_into("<I", entry, at, value)
        struct.pack_into("<I", entry, 4, 0)
        struct.pack_into("<I", entry, 4, L.checksum(entry))
        shutil.copyfile(img, bad)
        patch_file(bad, LOG_AT, bytes(entry))
        _rewrite_current_header(bad, log_guid=guid, sequence=1 << 40)
        try:
            with Vhdx.open(str(bad), readonly=False) as drv:
                drv.read(0, drv.size)
            outcomes["opened"] += 1
        except BlockError:
            outcomes["refused"] += 1
        assert exercise(Vhdx, bad, f"log mutation #{k}") in ("opened", "refused")
    assert outcomes["refused"] > 5 and outcomes["opened"] > 5, outcomes


@needs_qemu
def test_sector_bitmap_entry_past_the_end_counted_as_qemu_img(tmp_path: Path) -> None:
    """A sector bitmap entry (BAT index 4096 with 1 MiB blocks) marked present past the
    end of the file: qemu-img check counts it, and so do we."""
    img = tmp_path / "big.vhdx"
    qemu_img("create", "-q", "-f", "vhdx", "-o", "block_size=1M", str(img), "5G")
    patch_file(img, BAT_AT + 8 * 4096, struct.pack("<Q", (64 * MiB) | L.PAYLOAD_FULLY_PRESENT))
    theirs = qemu_img("check", "--output", "json", "-f", "vhdx", str(img), check=False)
    with Vhdx.open(str(img), readonly=False, for_check=True) as drv:
        result = drv.check()
    assert result.corruptions == json.loads(theirs.stdout)["corruptions"] == 1
    assert "VHDX BAT entry 4096 start offset 67108864" in theirs.stderr
    assert result.messages[0].startswith("ERROR: VHDX BAT entry 4096 start offset 67108864")
    with pytest.raises(CorruptImageError) as info:
        Vhdx.open(str(img))
    assert info.value.offset == BAT_AT + 8 * 4096
