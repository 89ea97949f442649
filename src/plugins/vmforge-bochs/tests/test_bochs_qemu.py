"""Bochs images built from the layout: vmforge reads what qemu-img reads; corrupt
and fuzzed headers fail cleanly."""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from bochs_images import build_bochs

from vmforge.block.driver import BlockError, CorruptImageError
from vmforge.testing.images import mixed_bytes
from vmforge.testing.oracles import needs
from vmforge_bochs import Bochs

MiB = 1 << 20
needs_qemu = needs("qemu-img", package="qemu-utils")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=True)


@needs_qemu
@pytest.mark.parametrize("extent,version", [(4096, 2), (65536, 1), (1 << 20, 2)])
def test_reads_what_qemu_img_reads(tmp_path: Path, extent: int, version: int) -> None:
    data = bytearray(mixed_bytes(3 * MiB + 1536, seed=extent, piece=8192))
    data[5000:5003] = b"odd"   # a sector with data next to zero sectors
    img = tmp_path / "d.bochs"
    build_bochs(img, data, extent=extent, version=version)
    out = tmp_path / "q.raw"
    _run("qemu-img", "convert", "-f", "bochs", "-O", "raw", str(img), str(out))
    with Bochs.open(str(img)) as drv:
        assert drv.read(0, drv.size) == out.read_bytes() == data
        for e in drv.block_status(0, drv.size):
            if e.is_zero:
                assert not any(data[e.offset:e.end])
    theirs = json.loads(_run("qemu-img", "info", "--output", "json", str(img)).stdout)
    ours = json.loads(_run(sys.executable, "-m", "vmforge.cli.main", "img", "info",
                           "--output", "json", str(img)).stdout)
    for key in ("format", "virtual-size", "actual-size", "cluster-size"):
        assert ours.get(key) == theirs.get(key), key
    qcow2 = tmp_path / "c.qcow2"  # convert through vmforge, compare with qemu-img
    _run(sys.executable, "-m", "vmforge.cli.main", "img", "convert", "-f", "bochs", "-O",
         "qcow2", str(img), str(qcow2))
    _run("qemu-img", "compare", "-f", "bochs", "-F", "qcow2", str(img), str(qcow2))


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
    bad = tmp_path / "bad.bochs"
    outcomes = {"opened": 0, "refused": 0}
    for k in range(300):
        data = bytearray(raw)
        for _ in range(1 + k % 3):
            data[rng.choice(hot)] ^= 1 << rng.randrange(8)
        bad.write_bytes(data)
        try:
            drv = Bochs.open(str(bad))
        except BlockError:
            outcomes["refused"] += 1
            continue
        try:
            n = min(drv.size, 8 * MiB)
            list(zip(range(4096), drv.block_status(0, n), strict=False))
            drv.read(0, n)
            outcomes["opened"] += 1
        except BlockError:
            outcomes["refused"] += 1
        finally:
            drv.close()
    assert outcomes["refused"] > 50 and outcomes["opened"] > 10, outcomes
