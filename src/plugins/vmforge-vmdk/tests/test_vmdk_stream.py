"""streamOptimized images as VMware writes them (grains, then grain tables and the
grain directory behind their markers, a footer holding the header, the
end-of-stream marker): qemu-img reads them, so do we, the same bytes."""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

import pytest

from vmforge.block.driver import CorruptImageError, ReadOnlyError
from vmforge.testing.corrupt import fuzz, overwrite_fields
from vmforge.testing.qemu_tools import assert_reads_as_qemu_img, needs_qemu, pattern
from vmforge_vmdk import Vmdk
from vmforge_vmdk.layout import (
    COMPRESSION_DEFLATE,
    F_COMPRESS,
    F_MARKER,
    F_NL_DETECT,
    GD_AT_END,
    MARKER_FOOTER,
    MARKER_GD,
    MARKER_GT,
    SECTOR,
    Header,
    div_up,
    make_descriptor,
)

MiB = 1 << 20


def _sector_pad(raw: bytes) -> bytes:
    return raw.ljust(div_up(len(raw), SECTOR) * SECTOR, b"\0")


def _marker(value: int, kind: int) -> bytes:
    return struct.pack("<QII", value, 0, kind).ljust(SECTOR, b"\0")


def build_stream(path: str | Path, data: bytes, granularity: int = 128,
                 gtes: int = 512) -> None:
    """``data`` (a multiple of 512 bytes) as a VMware stream: zero grains and grain
    tables left out, the grain directory found through the footer."""
    capacity = len(data) // SECTOR
    cs = granularity * SECTOR
    grains = div_up(capacity, granularity)
    gt_count = div_up(grains, gtes)
    header = Header(3, F_NL_DETECT | F_COMPRESS | F_MARKER, capacity, granularity, 1, 20,
                    gtes, 0, GD_AT_END, 128, COMPRESSION_DEFLATE)
    desc = make_descriptor(0x1234abcd, 0xFFFFFFFF, "streamOptimized", None,
                           [f'RW {capacity} SPARSE "stream.vmdk"\n'], "4", len(data),
                           "ide", "2147483647").encode()
    out = bytearray(header.pack().ljust(SECTOR, b"\0") + desc.ljust(20 * SECTOR, b"\0"))
    out += bytes(128 * SECTOR - len(out))
    table = [0] * (gt_count * gtes)
    for i in range(grains):
        chunk = data[i * cs:(i + 1) * cs]
        if not any(chunk):
            continue
        table[i] = len(out) // SECTOR
        payload = zlib.compress(chunk)
        out += _sector_pad(struct.pack("<QI", i * granularity, len(payload)) + payload)
    gt_sectors = div_up(gtes * 4, SECTOR)
    directory = []
    for t in range(gt_count):
        entries = table[t * gtes:(t + 1) * gtes]
        if not any(entries):
            directory.append(0)
            continue
        out += _marker(gt_sectors, MARKER_GT)
        directory.append(len(out) // SECTOR)
        out += _sector_pad(struct.pack(f"<{gtes}I", *entries))
    gd_sectors = div_up(gt_count * 4, SECTOR)
    out += _marker(gd_sectors, MARKER_GD)
    gd_at = len(out) // SECTOR
    out += _sector_pad(struct.pack(f"<{gt_count}I", *directory))
    out += _marker(1, MARKER_FOOTER)
    header.gd_offset = gd_at
    out += header.pack().ljust(SECTOR, b"\0")
    out += bytes(SECTOR)   # end of stream
    Path(path).write_bytes(out)


def _contents(size: int) -> bytearray:
    data = bytearray(size)
    data[:100_000] = pattern(100_000, 1)
    data[3 * MiB + 512:3 * MiB + 70_000] = b"\x42" * (70_000 - 512)
    data[size - 1024:] = pattern(1024, 2)
    return data


@needs_qemu
@pytest.mark.parametrize(("size", "granularity", "gtes"),
                         [(5 * MiB, 128, 512), (40 * MiB + 1536, 128, 512),
                          (3 * MiB, 8, 64), (2 * MiB + 512, 16, 128)])
def test_vmware_streams_read_as_qemu_reads_them(tmp_path: Path, size: int, granularity: int,
                                                gtes: int) -> None:
    img = tmp_path / "stream.vmdk"
    data = _contents(size)
    build_stream(img, bytes(data), granularity, gtes)
    assert_reads_as_qemu_img(Vmdk, img, "vmdk", data, tmp_path)
    with Vmdk.open(str(img)) as drv:
        assert drv.create_type == "streamOptimized" and drv.cid == 0x1234abcd
        assert drv.check().clean
        e = next(iter(drv.block_status(0, 512)))
        assert e.is_data and e.status & e.status.COMPRESSED and e.host_offset is None


def test_vmware_streams_are_read_only(tmp_path: Path) -> None:
    img = tmp_path / "stream.vmdk"
    build_stream(img, bytes(_contents(2 * MiB)))
    before = img.read_bytes()
    with pytest.raises(ReadOnlyError, match="footer"):
        Vmdk.open(str(img), readonly=False)
    assert img.read_bytes() == before


def test_bad_footer(tmp_path: Path) -> None:
    img = tmp_path / "stream.vmdk"
    build_stream(img, bytes(_contents(2 * MiB)))
    raw = bytearray(img.read_bytes())
    raw[-SECTOR] = 9   # the end-of-stream marker is not one
    img.write_bytes(raw)
    with pytest.raises(CorruptImageError, match="invalid footer") as info:
        Vmdk.open(str(img))
    assert info.value.offset == len(raw) - 3 * SECTOR and "stream.vmdk" in str(info.value)


def test_footer_fuzz(tmp_path: Path) -> None:
    img = tmp_path / "stream.vmdk"
    build_stream(img, bytes(_contents(2 * MiB)))
    original = img.read_bytes()
    tail = len(original) - 3 * SECTOR - 1024   # the grain directory, the footer
    rng = random.Random(3)

    def mutate(i: int, data: bytearray) -> None:
        view = bytearray(data[tail:])
        overwrite_fields(view, 1 + i % 3, len(view), rng, "<I" if i % 2 else None,
                         lambda: [0, 1, 3, 2 ** 32 - 1, rng.getrandbits(24)])
        data[tail:] = view

    outcomes = fuzz(Vmdk, original, tmp_path / "bad.vmdk", mutate, rounds=200)
    assert outcomes["refused"] > 10 and outcomes["opened"] > 20, outcomes
