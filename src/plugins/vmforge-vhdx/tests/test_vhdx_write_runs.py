"""Batched writes (``pwritev_runs``, what ``convert`` writes a buffer's worth with):
pieces that go one after the other in the file are written with one ``pwritev``, a
new payload block is allocated as a single write allocates it; the image reads as
the one single writes make (the files differ by their random GUIDs), and qemu-img
checks it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from vmforge.block.backend import BlockBackend
from vmforge.testing.batches import (
    RUNS_ACROSS_BLOCKS,
    assert_pieces_in_a_row_in_one_call,
    seeded,
    write_single_and_batched,
)
from vmforge.testing.oracles import require_program
from vmforge_vhdx import Vhdx

K = 1024
MiB = K * K
RUNS = RUNS_ACROSS_BLOCKS


@pytest.mark.parametrize("subformat", ["dynamic", "fixed"])
def test_a_batch_is_the_file_single_writes_make(tmp_path: Path, subformat: str) -> None:
    one, batch = tmp_path / "one.vhdx", tmp_path / "batch.vhdx"
    write_single_and_batched(
        "vhdx", lambda p: Vhdx.create(str(p), 12 * MiB, subformat=subformat), one, batch,
        seeded(RUNS))
    assert os.path.getsize(one) == os.path.getsize(batch)
    qemu_img = require_program("qemu-img", "qemu-utils")
    subprocess.run([qemu_img, "compare", "-q", "-f", "vhdx", "-F", "vhdx",
                    str(one), str(batch)], check=True)
    subprocess.run([qemu_img, "check", "-q", "-f", "vhdx", str(batch)], check=True)


def test_pieces_in_a_row_in_one_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """8 pieces side by side in a block already there: one pwritev (8 before)."""
    assert_pieces_in_a_row_in_one_call("vhdx", lambda p: Vhdx.create(str(p), 4 * MiB),
                                       tmp_path / "a.vhdx", monkeypatch)


def test_a_blocks_place_looked_up_once_for_its_pieces(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """16 pieces apart in two blocks (one new, one there): the BAT consulted once per
    block (before: once per piece), the pieces where single writes put them."""
    img = tmp_path / "a.vhdx"
    Vhdx.create(str(img), 16 * MiB, block_size=MiB)
    runs = [(off, bytes([off // (8 * K) % 251 + 1]) * 4096)
            for base in (0, MiB) for off in range(base, base + 8 * 64 * K, 64 * K)]
    with BlockBackend.open(str(img), "vhdx", readonly=False) as bb:
        bb.write(MiB + 4096, b"x" * 512)             # the second block, allocated
        looked: list[int] = []
        drv = bb.top
        real = drv._cluster_status

        def counted(i: int):  # type: ignore[no-untyped-def]
            looked.append(i)
            return real(i)

        monkeypatch.setattr(drv, "_cluster_status", counted)
        bb.pwritev_runs([(off, memoryview(data)) for off, data in runs])
        monkeypatch.undo()
        assert looked.count(1) == 1
        assert looked.count(0) <= 2                  # before and after its allocation
        for off, data in runs:
            assert bb.read(off, len(data)) == data
