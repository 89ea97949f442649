"""Batched writes (``pwritev_runs``, what ``convert`` writes a buffer's worth with):
a batch's new grains take the places one write each would give them, their data
goes out with one ``pwritev`` per stretch of the file and their grain table
entries with one ``pwrite`` per table and copy; the file is the one those single
writes make, byte for byte."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from vmforge.block.backend import BlockBackend
from vmforge.testing.batches import count_calls, write_single_and_batched
from vmforge.testing.oracles import require_program
from vmforge_vmdk import Vmdk

K = 1024
MiB = K * K
GRAIN = 64 * K
#: whole grains with gaps, a grain rewritten in place, partial grains (new and old),
#: a run across grain tables (monolithicSparse: 512 entries, 32 MiB a table)
RUNS = [(0, 3 * GRAIN), (5 * GRAIN, GRAIN), (7 * GRAIN, 2 * GRAIN), (GRAIN, GRAIN),
        (12 * GRAIN + 512, 4 * K), (20 * GRAIN, GRAIN + 100), (32 * MiB - GRAIN, 3 * GRAIN),
        (40 * MiB, 2 * GRAIN)]


def _data(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.mark.parametrize("subformat", ["monolithicSparse", "twoGbMaxExtentSparse",
                                       "monolithicFlat"])
def test_a_batch_is_the_file_single_writes_make(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                subformat: str) -> None:
    monkeypatch.setattr(random, "getrandbits", lambda bits: 0x1234ABCD)   # the new CID
    one, batch = tmp_path / "one" / "a.vmdk", tmp_path / "batch" / "a.vmdk"

    def make(img: Path) -> None:       # (an image of several files: a folder each)
        img.parent.mkdir()
        Vmdk.create(str(img), 48 * MiB, subformat=subformat)

    write_single_and_batched("vmdk", make, one, batch,
                             [(off, _data(n, off)) for off, n in RUNS], copy=False)
    for a in sorted(one.parent.iterdir()):
        assert a.read_bytes() == (batch.parent / a.name).read_bytes(), a.name
    qemu_img = require_program("qemu-img", "qemu-utils")
    subprocess.run([qemu_img, "check", "-q", "-f", "vmdk", str(batch)], check=True)


def test_new_grains_in_few_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """16 new grains, every other one (a zero grain between: convert skips it), in
    one table: their places follow each other in the file, so the data goes in one
    write, the entries in one per table copy (48 calls before: a pwritev and two
    pwrites per grain)."""
    img = tmp_path / "a.vmdk"
    Vmdk.create(str(img), 8 * MiB, subformat="monolithicSparse")
    runs = [(off, _data(GRAIN, off)) for off in range(0, 4 * MiB, 2 * GRAIN)]
    with BlockBackend.open(str(img), "vmdk", readonly=False) as bb:
        bb.write(6 * MiB, b"x")          # the new CID, written before the count
        calls = count_calls(monkeypatch, os, "pwrite", "pwritev")
        bb.pwritev_runs([(off, memoryview(data)) for off, data in runs])
        monkeypatch.undo()
        assert calls["pwritev"] == 1 and calls["pwrite"] == 2, calls
        for off, data in runs:
            assert bb.read(off, GRAIN) == data
            assert bb.read(off + GRAIN, GRAIN) == bytes(GRAIN)
