"""The raw driver through the block driver API, with qemu-img as the oracle."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess

import pytest

from vmforge.block.driver import BlockRangeError, BlockStatus, ReadOnlyError
from vmforge.plugins import Registry
from vmforge.testing.oracles import needs
from vmforge_raw import Raw

QEMU_IMG = shutil.which("qemu-img")
needs_qemu_img = needs("qemu-img", package="qemu-utils")  # skips, or fails in CI


def test_registered_as_block_plugin() -> None:
    assert Registry().load("block", "raw") is Raw


def test_create_sparse_and_roundtrip_odd_offsets(tmp_path) -> None:
    path = str(tmp_path / "d.img")
    Raw.create(path, 1 << 20)
    assert os.path.getsize(path) == 1 << 20
    with Raw.open(path, readonly=False) as img:
        assert img.size == 1 << 20
        img.write(4093, b"xyz" * 1000)
        img.write(0, b"\x01")
        img.write((1 << 20) - 1, b"\xff")
        assert img.read(4093, 3000) == b"xyz" * 1000
        assert img.read(4090, 3) == bytes(3)
    with Raw.open(path) as img:
        assert img.read(0, 1) == b"\x01"
        assert img.read((1 << 20) - 1, 1) == b"\xff"
        # vectored read into several caller buffers
        a, b = bytearray(5), bytearray(7)
        img.preadv(4093, [memoryview(a), memoryview(b)])
        assert bytes(a + b) == (b"xyz" * 4)[:12]


def test_out_of_range_and_readonly(tmp_path) -> None:
    path = str(tmp_path / "d.img")
    Raw.create(path, 4096)
    with Raw.open(path) as img:
        with pytest.raises(ReadOnlyError, match=r"d\.img"):
            img.write(0, b"x")
        with pytest.raises(BlockRangeError):
            img.read(4000, 200)
        with pytest.raises(BlockRangeError):
            img.read(-1, 1)


def test_block_status_follows_holes(tmp_path) -> None:
    path = str(tmp_path / "d.img")
    size = 8 << 20
    Raw.create(path, size)
    with Raw.open(path, readonly=False) as img:
        img.write(2 << 20, os.urandom(1 << 20))
        img.flush()
        extents = list(img.block_status(0, size))
    assert sum(e.length for e in extents) == size
    assert extents[0].offset == 0
    for prev, nxt in itertools.pairwise(extents):
        assert prev.end == nxt.offset
    data = [e for e in extents if e.status & BlockStatus.DATA]
    assert any(e.offset <= 2 << 20 and e.end >= 3 << 20 for e in data)
    zero = [e for e in extents if e.status & BlockStatus.ZERO]
    assert any(e.offset == 0 for e in zero), "the start of a sparse file is a hole"
    assert all(e.host_offset == e.offset for e in extents), "raw maps every byte in place"


def test_write_zeroes_and_discard_punch_holes(tmp_path) -> None:
    path = str(tmp_path / "d.img")
    Raw.create(path, 4 << 20)
    with Raw.open(path, readonly=False) as img:
        img.write(0, b"\xaa" * (4 << 20))
        img.write_zeroes(1 << 20, 1 << 20, may_unmap=True)
        img.discard(3 << 20, 1 << 20)
        assert img.read(1 << 20, 1 << 20) == bytes(1 << 20)
        assert img.read(0, 16) == b"\xaa" * 16
        img.write_zeroes(17, 100)
        assert img.read(10, 120) == b"\xaa" * 7 + bytes(100) + b"\xaa" * 13


def test_truncate_and_create_options(tmp_path) -> None:
    path = str(tmp_path / "d.img")
    Raw.create(path, 1 << 20, preallocation="full")
    assert os.stat(path).st_blocks * 512 >= 1 << 20
    with pytest.raises(ValueError, match="preallocation"):
        Raw.create(path, 1 << 20, preallocation="bogus")
    with pytest.raises(ValueError, match="no create option"):
        Raw.create(path, 1 << 20, cluster_size=65536)
    with Raw.open(path, readonly=False) as img:
        img.truncate(3 << 20)
        assert img.size == 3 << 20
        assert img.read((3 << 20) - 4, 4) == bytes(4)


@needs_qemu_img
def test_qemu_img_agrees(tmp_path) -> None:
    """Data written by vmforge is what qemu-img sees, and the reverse."""
    ours = str(tmp_path / "ours.img")
    Raw.create(ours, 2 << 20)
    pattern = os.urandom(65536)
    with Raw.open(ours, readonly=False) as img:
        img.write(12345, pattern)
    theirs = str(tmp_path / "theirs.img")
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "raw", theirs, "2M"], check=True)
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 512 4096", theirs],
                   check=True, capture_output=True)
    with Raw.open(theirs) as img:
        assert img.read(512, 4096) == b"\x5a" * 4096
        assert img.read(0, 512) == bytes(512)
    info = json.loads(subprocess.run([QEMU_IMG, "info", "--output", "json", ours],
                                     check=True, capture_output=True, text=True).stdout)
    assert info["format"] == "raw" and info["virtual-size"] == 2 << 20
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 512 4096", ours],
                   check=True, capture_output=True)
    with Raw.open(ours) as img:
        expect = bytearray(2 << 20)
        expect[12345:12345 + 65536] = pattern
        expect[512:512 + 4096] = b"\x5a" * 4096
        assert img.read(0, 2 << 20) == bytes(expect)


@needs_qemu_img
def test_measure_matches_qemu_img(tmp_path) -> None:
    for size in (1000, 10 << 20, (1 << 30) + 1):
        out = subprocess.run([QEMU_IMG, "measure", "-O", "raw", "--size", str(size),
                              "--output", "json"], check=True, capture_output=True, text=True)
        assert Raw.measure(size, None) == json.loads(out.stdout)
