"""cloop images built from the layout: vmforge reads what qemu-img reads; corrupt
and fuzzed headers fail cleanly."""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from cloop_images import build_cloop

from vmforge.block.driver import BlockError, CorruptImageError
from vmforge.testing.images import mixed_bytes
from vmforge.testing.oracles import needs
from vmforge_cloop import Cloop

MiB = 1 << 20
needs_qemu = needs("qemu-img", package="qemu-utils")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=True)


@needs_qemu
@pytest.mark.parametrize("block", [512, 65536, 256 * 1024])
def test_reads_what_qemu_img_reads(tmp_path: Path, block: int) -> None:
    data = bytearray(mixed_bytes(3 * MiB + 1536, seed=block, piece=8192))
    data += bytes(-len(data) % block)   # whole blocks
    img = tmp_path / "d.cloop"
    build_cloop(img, data, block_size=block)
    out = tmp_path / "q.raw"
    _run("qemu-img", "convert", "-f", "cloop", "-O", "raw", str(img), str(out))
    with Cloop.open(str(img)) as drv:
        assert drv.read(0, drv.size) == out.read_bytes() == data
    theirs = json.loads(_run("qemu-img", "info", "--output", "json", str(img)).stdout)
    ours = json.loads(_run(sys.executable, "-m", "vmforge.cli.main", "img", "info",
                           "--output", "json", str(img)).stdout)
    for key in ("format", "virtual-size", "actual-size", "cluster-size"):
        assert ours.get(key) == theirs.get(key), key
    qcow2 = tmp_path / "c.qcow2"  # convert through vmforge, compare with qemu-img
    _run(sys.executable, "-m", "vmforge.cli.main", "img", "convert", "-f", "cloop", "-O",
         "qcow2", str(img), str(qcow2))
    _run("qemu-img", "compare", "-f", "cloop", "-F", "qcow2", str(img), str(qcow2))


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
    bad = tmp_path / "bad.cloop"
    outcomes = {"opened": 0, "refused": 0}
    for k in range(300):
        data = bytearray(raw)
        for _ in range(1 + k % 3):
            data[rng.choice(hot)] ^= 1 << rng.randrange(8)
        bad.write_bytes(data)
        try:
            drv = Cloop.open(str(bad))
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
