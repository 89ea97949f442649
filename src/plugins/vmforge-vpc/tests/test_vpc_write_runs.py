"""Batched writes (``pwritev_runs``, what ``convert`` writes a buffer's worth with):
pieces that go one after the other in the file are written with one ``pwritev``, a
new block is allocated as a single write allocates it; the file is the one single
writes make, byte for byte."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from vmforge.block.backend import BlockBackend
from vmforge.block.driver import BlockError
from vmforge.testing.batches import (
    RUNS_ACROSS_BLOCKS,
    assert_pieces_in_a_row_in_one_call,
    count_calls,
    seeded,
    write_single_and_batched,
)
from vmforge.testing.oracles import require_program
from vmforge_vpc import Vpc

K = 1024
MiB = K * K
RUNS = RUNS_ACROSS_BLOCKS


@pytest.mark.parametrize("subformat", ["dynamic", "fixed"])
def test_a_batch_is_the_file_single_writes_make(tmp_path: Path, subformat: str) -> None:
    one, batch = tmp_path / "one.vhd", tmp_path / "batch.vhd"
    write_single_and_batched("vpc", lambda p: Vpc.create(str(p), 12 * MiB, subformat=subformat),
                             one, batch, seeded(RUNS))
    assert one.read_bytes() == batch.read_bytes()
    qemu_img = require_program("qemu-img", "qemu-utils")
    subprocess.run([qemu_img, "compare", "-q", "-f", "vpc", "-F", "vpc",
                    str(one), str(batch)], check=True)


def test_pieces_in_a_row_in_one_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """8 pieces side by side in a block already there: one pwritev (8 before)."""
    assert_pieces_in_a_row_in_one_call("vpc", lambda p: Vpc.create(str(p), 4 * MiB),
                                       tmp_path / "a.vhd", monkeypatch)


def test_new_blocks_written_whole_in_one_call(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Four new blocks written whole: their bitmaps, data and the footer after them in
    one pwritev, their BAT entries in one pwrite (before: a pwritev per block, and a
    pwrite each of its bitmap, the footer and its BAT entry); the file is the one
    single writes make."""
    one, batch = tmp_path / "one.vhd", tmp_path / "batch.vhd"
    Vpc.create(str(one), 12 * MiB)
    shutil.copyfile(one, batch)
    runs = [(off, random.Random(off).randbytes(MiB)) for off in range(2 * MiB, 10 * MiB, MiB)]
    with BlockBackend.open(str(one), "vpc", readonly=False) as bb:
        for off, data in runs:
            bb.write(off, data)
    with BlockBackend.open(str(batch), "vpc", readonly=False) as bb:
        calls = count_calls(monkeypatch, os, "pwritev", "pwrite")
        bb.pwritev_runs([(off, memoryview(data)) for off, data in runs])
        monkeypatch.undo()
        assert calls == {"pwritev": 1, "pwrite": 1}
    assert one.read_bytes() == batch.read_bytes()


def test_a_failed_data_write_still_records_the_blocks_given(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The BAT entries of a batch's new blocks are written even when its data write
    fails: the blocks are the image's (reading as zeros) and are not given twice."""
    img = tmp_path / "a.vhd"
    Vpc.create(str(img), 8 * MiB)
    with BlockBackend.open(str(img), "vpc", readonly=False) as bb:
        def failing(*args):  # type: ignore[no-untyped-def]
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "pwritev", failing)
        with pytest.raises((OSError, BlockError)):
            bb.pwritev_runs([(2 * MiB, memoryview(b"a" * 4096))])
        monkeypatch.undo()
        bb.pwritev_runs([(2 * MiB + 4096, memoryview(b"b" * 4096))])
        assert bb.read(2 * MiB, 8192) == bytes(4096) + b"b" * 4096
    qemu_img = require_program("qemu-img", "qemu-utils")
    # (qemu-img has no check for vpc; its open refuses a file shorter than its blocks)
    subprocess.run([qemu_img, "info", "-f", "vpc", str(img)], check=True,
                   stdout=subprocess.DEVNULL)
