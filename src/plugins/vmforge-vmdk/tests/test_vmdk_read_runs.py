"""Batched reads (``preadv_runs``, what ``convert`` reads a buffer's worth with):
grains and flat-extent pieces that follow each other in their file come in with
one ``preadv``; the bytes are those of one read per run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from vmforge.block.backend import BlockBackend
from vmforge.block.ops import convert
from vmforge.testing.batches import count_calls
from vmforge.testing.oracles import require_program
from vmforge_vmdk import Vmdk

K = 1024
MiB = K * K
GRAIN = 64 * K


def _filled(path: Path, subformat: str, every: int = 1) -> bytes:
    """A 4 MiB image whose first 2 MiB hold data in every ``every``-th grain (written
    in order: a sparse extent's grains lie one after the other in the file); the
    rest reads as zeros."""
    Vmdk.create(str(path), 4 * MiB, subformat=subformat)
    data = bytearray((bytes(range(251)) * (2 * MiB // 251 + 1))[:2 * MiB])
    with BlockBackend.open(str(path), "vmdk", readonly=False) as bb:
        for off in range(0, 2 * MiB, GRAIN):
            if off // GRAIN % every:
                data[off:off + GRAIN] = bytes(GRAIN)
            else:
                bb.write(off, data[off:off + GRAIN])
    return bytes(data) + bytes(2 * MiB)


@pytest.mark.parametrize("subformat", ["monolithicSparse", "monolithicFlat"])
def test_runs_in_a_row_read_with_one_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          subformat: str) -> None:
    img = tmp_path / "a.vmdk"
    expect = _filled(img, subformat)
    # pieces of several grains, in a row in the image and in the file
    layout = [(0, 100 * K), (100 * K, 28 * K), (128 * K, 64 * K), (192 * K, 1 * K)]
    with BlockBackend.open(str(img), "vmdk") as bb:
        bufs = [(off, memoryview(bytearray(n))) for off, n in layout]
        calls = count_calls(monkeypatch, os, "preadv")
        bb.preadv_runs(bufs)
        monkeypatch.undo()
        for off, buf in bufs:
            assert bytes(buf) == expect[off:off + buf.nbytes]
        assert calls["preadv"] == 1
        # a gap in the middle: two calls; the unallocated tail reads as zeros, no call
        bufs = [(0, memoryview(bytearray(GRAIN))), (3 * GRAIN, memoryview(bytearray(GRAIN))),
                (3 * MiB, memoryview(bytearray(GRAIN)))]
        for _, buf in bufs:
            buf[:] = b"\xff" * GRAIN
        calls = count_calls(monkeypatch, os, "preadv")
        bb.preadv_runs(bufs)
        monkeypatch.undo()
        for off, buf in bufs:
            assert bytes(buf) == expect[off:off + buf.nbytes]
        assert calls["preadv"] == (2 if subformat == "monolithicSparse" else 3)


def test_convert_reads_a_contiguous_sparse_image_in_few_calls(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    qemu_img = require_program("qemu-img", "qemu-utils")
    img, out = tmp_path / "a.vmdk", tmp_path / "out.raw"
    expect = _filled(img, "monolithicSparse", every=2)   # 16 grains, 16 gaps
    with open(out, "wb") as f:
        f.truncate(4 * MiB)
    with BlockBackend.open(str(img), "vmdk") as src, \
            BlockBackend.open(str(out), "raw", readonly=False) as dst:
        calls = count_calls(monkeypatch, os, "preadv")
        convert([src], dst)
        monkeypatch.undo()
    # the 16 grains lie in a row in the file: one read (one per grain before)
    assert calls["preadv"] == 1
    assert out.read_bytes() == expect
    subprocess.run([qemu_img, "compare", "-f", "vmdk", "-F", "raw", str(img), str(out)],
                   check=True, stdout=subprocess.DEVNULL)
