"""What is particular to the example format, beyond the conformance kit."""

from __future__ import annotations

import struct

import pytest

from vmforge.block import BlockError, CorruptImageError
from vmforge_example_format import ExampleFormat
from vmforge_example_format.driver import HEADER_SIZE, MAGIC, ZERO


def test_layout_header_table_then_blocks(tmp_path) -> None:
    path = str(tmp_path / "a.ex")
    ExampleFormat.create(path, 1 << 20, block_size=4096)
    with open(path, "rb") as f:
        assert f.read(8) == MAGIC
    with ExampleFormat.open(path, readonly=False) as img:
        assert img.table_offset == HEADER_SIZE and len(img.table) == 256
        img.write(5000, b"x")                       # block 1 gets the first data block
        img.write_zeroes(8192, 4096)                # a whole unallocated block: no data
        assert img.table[1] == 2 * 4096 and img.table[2] == ZERO


def test_checksum_protects_the_header(tmp_path) -> None:
    path = str(tmp_path / "a.ex")
    ExampleFormat.create(path, 1 << 20)
    with open(path, "r+b") as f:
        f.seek(16)                                   # the virtual size
        f.write(struct.pack("<Q", 1 << 40))
    with pytest.raises(CorruptImageError) as info:
        ExampleFormat.open(path)
    assert info.value.table == "header" and "checksum" in str(info.value)


def test_bad_entry_is_reported_with_table_and_offset(tmp_path) -> None:
    path = str(tmp_path / "a.ex")
    ExampleFormat.create(path, 1 << 20, block_size=4096)
    with open(path, "r+b") as f:
        f.seek(HEADER_SIZE + 8 * 3)
        f.write(struct.pack("<Q", 12345))            # not a multiple of the block size
    with ExampleFormat.open(path) as img:
        with pytest.raises(CorruptImageError) as info:
            img.read(3 * 4096, 10)
        assert info.value.table == "block table"
        assert info.value.offset == HEADER_SIZE + 24
        assert img.check().corruptions == 1


def test_not_ours(tmp_path) -> None:
    path = tmp_path / "raw"
    path.write_bytes(bytes(8192))
    assert ExampleFormat.probe(path.read_bytes()[:512], str(path)) == 0
    with pytest.raises(BlockError, match="magic"):
        ExampleFormat.open(str(path))
